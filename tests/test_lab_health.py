"""Device health in the scheduler's scripts, on a private redis-server without worker processes.

Boards are registered by hand (as a worker would, ``test_lab_scheduler.register``); chains are recorded,
not sent. The lab tests with real workers are in ``test_lab_health_workers.py``.
"""

from __future__ import annotations

import pytest
from lab_helpers import local_job, wait_for
from test_lab_scheduler import finish, lab, redis_server, register  # noqa: F401 - fixtures

from tasks import health

pytest_plugins = ("server_fixtures",)  # engine: the archive on SQLite and PostgreSQL
from tasks.keys import board_key, job_key, type_keys

pytestmark = pytest.mark.usefixtures("no_chains")


@pytest.fixture
def no_chains(monkeypatch):
    """Chains are recorded instead of sent (no Celery here)."""
    from tasks import chains

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(chains, "send_chain", lambda job, board, attempt, names, *a, **k: sent.append((job, board)))
    return sent


@pytest.fixture
def checks(tmp_path, monkeypatch):
    """A health-check directory; ``write(conf)`` puts local-shell's health check (and settings) in it."""
    monkeypatch.setenv("LAVA_DISPATCH_HEALTH_CHECKS", str(tmp_path))

    def write(conf: str = "", steps: list[str] | None = None) -> None:
        (tmp_path / "local-shell.yaml").write_text(local_job("health-check", steps=steps))
        if conf:
            (tmp_path / "local-shell.conf").write_text(conf)
    return write


def board_up(lab, name: str) -> health.HealthChange:
    """Register a board and set it up as its worker does at start."""
    register(lab, name)
    return health.setup_board(lab, name, "local-shell")


def record(lab, name: str) -> dict[str, str]:
    return lab.r.hgetall(board_key(name))


def job_state(lab, job_id: str) -> tuple[str, str]:
    state, board = lab.r.hmget(job_key(job_id), "state", "board")
    return state, board or ""


def test_without_a_health_check_file_a_new_board_is_good_and_takes_jobs(lab, checks):
    change = board_up(lab, "b1")
    assert (change.new, change.health_check) == ("Good", "")
    assert record(lab, "b1")["health"] == "Good"
    assert lab.submit(local_job("j")).board == "b1"
    entry = lab.health_history("b1")[0]
    assert (entry["old"], entry["new"], entry["who"]) == ("Unknown", "Good", "")
    assert "no health check" in entry["reason"]


def test_maintenance_is_honoured_by_the_next_placement_and_recorded(lab, checks):
    board_up(lab, "b1")
    board_up(lab, "b2")
    lab.set_health("b1", "maintenance", who="alice", reason="new PSU")
    assert lab.r.zrange(type_keys("local-shell").idle, 0, -1) == ["b2"]
    first = lab.submit(local_job("a"))
    second = lab.submit(local_job("b"))
    assert (first.board, second.board) == ("b2", None)  # b1 takes nothing, even with a job waiting
    shown = lab.device("b1")
    assert (shown["health"], shown["health_by"], shown["health_reason"], shown["state"]) == \
        ("Maintenance", "alice", "new PSU", "Idle")
    assert shown["history"][0]["who"] == "alice" and shown["history"][0]["new"] == "Maintenance"
    _, placed = finish(lab, first.job_id)
    assert [(a.job, a.board) for a in placed] == [(second.job_id, "b2")]
    # back to Good without a health check for the type: Good at once, and it takes queued work again
    third = lab.submit(local_job("c"))
    assert third.board is None
    change = lab.set_health("b1", "Good", who="alice", reason="fixed")
    assert change.new == "Good" and job_state(lab, third.job_id) == ("Scheduled", "b1")


def test_maintenance_lets_the_running_job_finish_then_the_board_is_skipped(lab, checks):
    board_up(lab, "b1")
    running = lab.submit(local_job("long"))
    queued = lab.submit(local_job("next"))
    change = lab.set_health("b1", "MAINTENANCE", who="bob", reason="re-cabling")
    assert change.canceled == "" and job_state(lab, running.job_id) == ("Scheduled", "b1")
    assert lab.device("b1")["state"] == "Reserved"
    final, placed = finish(lab, running.job_id)
    assert final == "Complete" and placed == []
    assert job_state(lab, queued.job_id)[0] == "Submitted"
    assert lab.r.zscore(type_keys("local-shell").idle, "b1") is None


def test_force_cancels_the_running_job(lab, checks):
    board_up(lab, "b1")
    running = lab.submit(local_job("long"))
    change = lab.set_health("b1", "Maintenance", who="bob", reason="smoke", force=True)
    assert change.canceled == running.job_id and job_state(lab, running.job_id)[0] == "Canceling"
    final, placed = finish(lab, running.job_id, "Incomplete")
    assert final == "Canceled" and placed == []


def test_a_first_registration_runs_the_health_check_before_any_job(lab, checks, no_chains):
    checks()
    change = board_up(lab, "b1")
    assert change.new == "Unknown" and change.health_check
    hc = change.health_check
    assert job_state(lab, hc) == ("Scheduled", "b1") and (hc, "b1") in no_chains
    assert lab.r.hget(job_key(hc), "health_check") == "1"
    ordinary = lab.submit(local_job("j"))
    assert ordinary.board is None  # an Unknown board runs its health check only
    _, placed = finish(lab, hc)
    assert record(lab, "b1")["health"] == "Good"
    assert [(a.job, a.board) for a in placed] == [(ordinary.job_id, "b1")]
    shown = lab.device("b1")
    assert shown["health_check"]["last_job"] == hc and shown["health_check"]["last_result"] == "Complete"
    assert shown["history"][0]["reason"] == f"health check job {hc} passed"


def test_a_failed_health_check_sets_the_board_bad_and_the_other_board_serves(lab, checks):
    checks()
    bad = board_up(lab, "b1").health_check
    good = board_up(lab, "b2").health_check
    rec = lab.r.hgetall(job_key(bad))
    lab.finish(bad, "b1", int(rec["attempt"]), "Incomplete", "Infrastructure", "boot failed: no prompt", [], [])
    finish(lab, good)
    b1 = record(lab, "b1")
    assert b1["health"] == "Bad"
    assert b1["health_reason"] == f"health check job {bad} Incomplete: boot failed: no prompt"
    jobs = [lab.submit(local_job(f"j{i}")) for i in range(3)]
    assert [j.board for j in jobs] == ["b2", None, None]
    for j in jobs:
        assert job_state(lab, j.job_id) == ("Scheduled", "b2")
        finish(lab, j.job_id)
    # an admin puts it back: its health check runs first, pinned to it
    change = lab.set_health("b1", "good", who="carol", reason="reflashed")
    assert change.new == "Unknown" and "health check runs first" in record(lab, "b1")["health_reason"]
    assert job_state(lab, change.health_check) == ("Scheduled", "b1")


def test_back_from_maintenance_runs_the_health_check_first(lab, checks):
    checks()
    hc = board_up(lab, "b1").health_check
    finish(lab, hc)
    lab.set_health("b1", "Maintenance", who="dan", reason="x")
    queued = lab.submit(local_job("waiting"))
    change = lab.set_health("b1", "Good", who="dan", reason="done")
    assert change.new == "Unknown" and change.health_check != hc
    assert job_state(lab, change.health_check) == ("Scheduled", "b1")
    assert job_state(lab, queued.job_id)[0] == "Submitted"
    _, placed = finish(lab, change.health_check)
    assert [a.job for a in placed] == [queued.job_id] and record(lab, "b1")["health"] == "Good"


def test_looping_runs_health_checks_back_to_back(lab, checks):
    checks()
    hc = board_up(lab, "b1").health_check
    finish(lab, hc)
    change = lab.set_health("b1", "looping", who="eve", reason="diagnose")
    assert change.new == "Looping" and change.health_check
    finish(lab, change.health_check)
    assert record(lab, "b1")["health"] == "Looping"
    again = lab.ensure_health_check("b1")
    assert again and again != change.health_check and job_state(lab, again) == ("Scheduled", "b1")
    assert lab.ensure_health_check("b1") is None  # one at a time


def test_looping_needs_a_health_check(lab, checks):
    board_up(lab, "b1")
    with pytest.raises(health.HealthError, match="no health check"):
        lab.set_health("b1", "Looping")
    with pytest.raises(health.HealthError, match="is not one of Good, Unknown"):
        lab.set_health("b1", "broken")
    with pytest.raises(health.HealthError, match="no board 'nope'"):
        lab.set_health("nope", "Good")


def test_every_n_jobs_a_health_check_goes_first(lab, checks):
    checks("jobs: 2\nhours: 0\n")
    finish(lab, board_up(lab, "b1").health_check)
    first = lab.submit(local_job("1"))
    finish(lab, first.job_id)
    assert lab.ensure_health_check("b1") is None
    second = lab.submit(local_job("2"))
    third = lab.submit(local_job("3"))
    _, placed = finish(lab, second.job_id)
    assert placed == [] and record(lab, "b1")["hc_due"] == "1"  # due: the queued job waits for the check
    hc = lab.ensure_health_check("b1")
    assert job_state(lab, hc) == ("Scheduled", "b1")
    _, placed = finish(lab, hc)
    assert [a.job for a in placed] == [third.job_id] and record(lab, "b1")["health"] == "Good"


def test_k_infrastructure_errors_in_a_row_set_the_board_bad(lab, checks, monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_INFRA_ERRORS", "3")
    board_up(lab, "b1")

    def fail(error_type: str) -> None:
        job = lab.submit(local_job("x"))
        rec = lab.r.hgetall(job_key(job.job_id))
        lab.finish(job.job_id, "b1", int(rec["attempt"]), "Incomplete", error_type, "tftp timed out", [], [])

    fail("Infrastructure")
    fail("Infrastructure")
    fail("Test")  # a job's own error: the count starts again
    assert record(lab, "b1")["infra_errors"] == "0"
    for _ in range(3):
        assert record(lab, "b1")["health"] == "Good"
        fail("Infrastructure")
    b1 = record(lab, "b1")
    assert b1["health"] == "Bad" and b1["health_reason"].startswith("3 infrastructure errors in a row")
    assert lab.submit(local_job("after")).board is None


def test_a_queue_timeout_cancels_a_job_for_a_type_without_a_board(lab, checks):
    text = local_job("late", device_type="no-such-type").replace("timeouts:\n", "timeouts:\n  queue:\n    seconds: 1\n")
    queued = lab.submit(text, queue_anyway=True)
    assert lab.r.hget(job_key(queued.job_id), "queue_timeout") == "1"
    summary = lab.queue_summary()["no-such-type"]
    assert summary["queued"] == 1 and summary["good"] == 0
    assert summary["waiting"] == "no board of device type no-such-type is registered"
    wait_for(lambda: lab.reap() is not None and job_state(lab, queued.job_id)[0] == "Canceled", 10,
             "the queue timeout")
    error = lab.r.hget(job_key(queued.job_id), "error")
    assert error == ("queue timeout: not scheduled within 1 s (timeouts.queue): device type no-such-type has no "
                     "board")
    assert lab.queue("no-such-type") == [] and lab.queue() == []


def test_a_scheduled_job_outlives_its_queue_timeout(lab, checks):
    board_up(lab, "b1")
    text = local_job("quick").replace("timeouts:\n", "timeouts:\n  queue:\n    seconds: 1\n")
    placed = lab.submit(text)
    assert placed.board == "b1" and lab.r.zcard("lava:{lab}:queue_until") == 0


def test_a_worker_host_in_maintenance_takes_no_jobs(lab, checks):
    from tasks import config

    board_up(lab, "b1")
    host = config.hostname()
    old, canceled = lab.set_worker_health(host, "maintenance", who="ops", reason="kernel update")
    assert (old, canceled) == ("Active", [])
    assert lab.submit(local_job("j")).board is None
    assert lab.device("b1")["host_health"] == "Maintenance"
    assert lab.workers()[0]["health"] == "Maintenance" and lab.workers()[0]["boards"] == ["b1"]
    lab.set_worker_health(host, "active", who="ops", reason="done")
    assert record(lab, "b1")["job"]
    assert "hc_due" not in record(lab, "b1")  # no health check for the type: nothing to run first
    with pytest.raises(health.HealthError, match="no board of the lab runs on worker host"):
        lab.set_worker_health("elsewhere", "Maintenance")


def test_the_lab_s_own_health_changes_reach_the_archive_in_order(lab, checks, engine):
    """The server's relay moves every change (the lab's too) into the SQL history, once."""
    from server import archive
    from server.archiver import archive_health_changes

    checks(steps=["lava-test-case fails --shell false"])
    hc = board_up(lab, "b1").health_check
    rec = lab.r.hgetall(job_key(hc))
    lab.finish(hc, "b1", int(rec["attempt"]), "Incomplete", "Test", "the check failed", [], [])
    lab.set_health("b1", "Retired", who="root", reason="scrapped")
    assert archive_health_changes(lab.r, engine) == 3 and archive_health_changes(lab.r, engine) == 0
    history = archive.health_history("b1", engine=engine)
    assert [(h.old, h.new, h.who) for h in history] == [("Bad", "Retired", "root"), ("Unknown", "Bad", None),
                                                          ("Unknown", "Unknown", None)]
    assert history[2].reason == "first registration: its health check runs first"
    assert history[1].reason == f"health check job {hc} Incomplete: the check failed"


def test_every_n_hours_an_idle_board_gets_its_health_check(lab, checks):
    checks("hours: 0.0002\n")  # 0.72 s
    finish(lab, board_up(lab, "b1").health_check)
    assert lab.ensure_health_check("b1") is None  # just checked
    hc = wait_for(lambda: lab.ensure_health_check("b1"), 10, "the periodic health check")
    assert job_state(lab, hc) == ("Scheduled", "b1") and lab.r.hget(job_key(hc), "priority") == "100"


def test_a_worker_host_back_to_active_runs_its_boards_health_checks_first(lab, checks):
    from tasks import config

    checks()
    finish(lab, board_up(lab, "b1").health_check)
    host = config.hostname()
    lab.set_worker_health(host, "maintenance", who="ops", reason="kernel update")
    queued = lab.submit(local_job("j"))
    assert queued.board is None
    lab.set_worker_health(host, "active", who="ops", reason="done")
    hc = record(lab, "b1")["hc_job"]
    assert hc and job_state(lab, hc) == ("Scheduled", "b1") and job_state(lab, queued.job_id)[0] == "Submitted"
    _, placed = finish(lab, hc)
    assert [a.job for a in placed] == [queued.job_id] and record(lab, "b1")["health"] == "Good"
