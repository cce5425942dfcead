"""Device health with real board workers (``lava-dispatch worker``) on a private redis-server.

Boards are local-shell boards; a board whose boots fail is the same device file with a console that
exits at once. The health check of ``local-shell`` is a job in the lab's health-check directory
(``LAVA_DISPATCH_HEALTH_CHECKS``). Every wait is a condition with a deadline.
"""

from __future__ import annotations

import pytest
from conftest import run_cli
from lab_helpers import LOCAL_DEVICE, descendants_by_env, local_job, running_lab, wait_for

from tasks.keys import board_key, job_key, type_keys

pytestmark = pytest.mark.lab

FINAL = ("Complete", "Incomplete", "Canceled")


def broken_device(directory) -> str:
    """local01's device file with a console that exits at once: every boot fails (an Infrastructure error)."""
    path = directory / "broken.yaml"
    text = LOCAL_DEVICE.read_text()
    start = text.index("  connect: ")
    end = text.index("\n", start)
    path.write_text(text[:start] + "  connect: /bin/false" + text[end:])
    return path


@pytest.fixture
def health_lab(tmp_path):
    checks = tmp_path / "health-checks"
    checks.mkdir()
    (checks / "local-shell.yaml").write_text(local_job("health-check"))
    env = {"LAVA_DISPATCH_HEALTH_CHECKS": str(checks), "LAVA_DISPATCH_INFRA_ERRORS": "2"}
    with running_lab(prefix="lab-health-", extra_env=env) as lab:
        yield lab
        state_dir = lab.env["LAVA_DISPATCH_STATE_DIR"]
        lab.stop_all()
        assert not descendants_by_env("LAVA_DISPATCH_STATE_DIR", state_dir)


def rec(lab, job_id: str) -> dict[str, str]:
    return lab.r().hgetall(job_key(job_id))


def board(lab, name: str) -> dict[str, str]:
    return lab.r().hgetall(board_key(name))


def wait_state(lab, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, str]:
    return wait_for(lambda: (r := rec(lab, job_id)).get("state") in states and r, timeout,
                    f"job {job_id} to be {'/'.join(states)}")


def wait_health(lab, name: str, health: str, timeout: float = 60) -> dict[str, str]:
    return wait_for(lambda: (b := board(lab, name)).get("health") == health and b, timeout,
                    f"board {name} to be {health}")


def submit(*argv: str) -> str:
    result = run_cli("submit", *argv)
    assert result.code == 0, result.err
    return result.out.splitlines()[0].strip()


def held_job(lab, name: str) -> tuple[str, object]:
    """A job file whose test waits until the returned flag file exists (the test decides when it ends)."""
    flag = lab.base / f"{name}.go"
    path = lab.base / f"{name}.yaml"
    path.write_text(local_job(name, steps=[f"while [ ! -e {flag} ]; do sleep 0.1; done",
                                           "lava-test-case held --shell true"]))
    return str(path), flag


def job_file(lab, name: str, text: str | None = None) -> str:
    path = lab.base / f"{name}.yaml"
    path.write_text(text or local_job(name))
    return str(path)


def test_a_board_whose_boots_fail_goes_bad_after_its_health_check_while_the_other_serves(health_lab):
    lab = health_lab
    lab.start_worker("good01", wait=False)
    lab.start_worker("bad01", broken_device(lab.base), wait=False)
    good = wait_health(lab, "good01", "Good")
    bad = wait_health(lab, "bad01", "Bad")
    assert good["hc_last_result"] == "Complete" and rec(lab, good["hc_last_job"])["health_check"] == "1"
    assert bad["hc_last_result"] == "Incomplete"
    assert bad["health_reason"].startswith(f"health check job {bad['hc_last_job']} Incomplete: ")
    lab.wait_idle("good01")
    jobs = [submit(job_file(lab, f"j{i}")) for i in range(4)]
    for job_id in jobs:
        done = wait_state(lab, job_id, FINAL)
        assert (done["state"], done["board"]) == ("Complete", "good01")
    assert f"{bad['hc_last_job']}" in run_cli("status").out and "[health check]" in run_cli("status").out
    shown = run_cli("devices", "show", "bad01")
    assert "health: Bad" in shown.out and "health check job" in shown.out
    listed = run_cli("devices").out
    assert any(line.split()[:3] == ["bad01", "local-shell", "Bad"] for line in listed.splitlines())
    assert lab.r().zscore(type_keys("local-shell").idle, "bad01") is None


def test_maintenance_lets_the_running_job_finish_and_good_runs_a_health_check_first(health_lab):
    lab = health_lab
    lab.start_worker("loc01", wait=False)
    wait_health(lab, "loc01", "Good")
    lab.wait_idle("loc01")
    path, flag = held_job(lab, "held")
    running = submit(path)
    wait_state(lab, running, ("Running",))
    result = run_cli("devices", "set-health", "loc01", "maintenance", "--reason", "re-cabling")
    assert result.code == 0 and "loc01: Good -> Maintenance" in result.out, result.err
    assert "finishes first" in result.out
    waiting = submit(job_file(lab, "waiting"))
    assert rec(lab, running)["state"] == "Running"
    flag.touch()
    assert wait_state(lab, running, FINAL)["state"] == "Complete"  # the running job was not killed
    wait_for(lambda: not board(lab, "loc01").get("job"), 30, "the board to be free")
    # the next placement skips it: the job queued meanwhile is still queued on a free, online board
    assert rec(lab, waiting)["state"] == "Submitted"
    assert lab.r().zscore(type_keys("local-shell").idle, "loc01") is None
    status = run_cli("status", waiting).out
    assert "waiting: no Good board of device type local-shell is online (1 Maintenance)" in status
    shown = run_cli("devices", "show", "loc01").out
    assert "health: Maintenance" in shown and "health_reason: re-cabling" in shown and "state: Idle" in shown
    # back to Good: its health check first, then the queued job
    result = run_cli("devices", "set-health", "loc01", "good", "--reason", "done")
    assert "loc01: Maintenance -> Unknown" in result.out and "health check job" in result.out
    check = result.out.split("health check job ")[1].split()[0]
    assert rec(lab, check)["health_check"] == "1"
    assert wait_state(lab, check, FINAL)["state"] == "Complete"
    wait_health(lab, "loc01", "Good")
    after = wait_state(lab, waiting, FINAL)
    assert after["state"] == "Complete" and int(after["started"]) >= int(rec(lab, check)["ended"])
    history = [line for line in run_cli("devices", "show", "loc01").out.splitlines() if "new:" in line]
    assert [line.split()[-1] for line in history[:3]] == ["Good", "Unknown", "Maintenance"]


def test_force_cancels_the_running_job(health_lab):
    lab = health_lab
    lab.start_worker("loc01", wait=False)
    wait_health(lab, "loc01", "Good")
    lab.wait_idle("loc01")
    path, _flag = held_job(lab, "held")
    running = submit(path)
    wait_state(lab, running, ("Running",))
    result = run_cli("devices", "set-health", "loc01", "Retired", "--force", "--reason", "gone")
    assert f"job {running} is canceled (--force)" in result.out
    assert wait_state(lab, running, FINAL, 30)["state"] == "Canceled"


def test_a_queue_timeout_cancels_a_job_for_a_type_without_a_board(health_lab):
    lab = health_lab
    lab.start_worker("loc01", wait=False)  # another type's worker: its heartbeats end what timed out
    text = local_job("late", device_type="no-such-board").replace("timeouts:\n",
                                                                   "timeouts:\n  queue:\n    seconds: 3\n")
    refused = run_cli("submit", job_file(lab, "late", text))
    assert refused.code == 2 and "no board of device type 'no-such-board'" in refused.err
    job_id = submit(job_file(lab, "late", text), "--queue-anyway")
    status = run_cli("status", job_id).out
    assert "state: Submitted" in status and "waiting: no board of device type no-such-board is registered" in status
    ended = wait_state(lab, job_id, FINAL, 30)
    assert ended["state"] == "Canceled"
    assert ended["error"] == ("queue timeout: not scheduled within 3 s (timeouts.queue): device type no-such-board "
                              "has no board")
    assert "queue timeout" in run_cli("status", job_id).out


def test_k_infrastructure_errors_in_a_row_set_a_board_bad(health_lab):
    lab = health_lab
    (lab.base / "no-checks").mkdir()
    lab.env["LAVA_DISPATCH_HEALTH_CHECKS"] = str(lab.base / "no-checks")  # no health check: Good at once
    lab.start_worker("bad01", broken_device(lab.base), wait=False)
    wait_health(lab, "bad01", "Good")
    lab.wait_idle("bad01")
    first, second, third = (submit(job_file(lab, f"j{i}")) for i in range(3))
    for job_id in (first, second):
        done = wait_state(lab, job_id, FINAL)
        assert (done["state"], done["error_type"]) == ("Incomplete", "Infrastructure")
    bad = wait_health(lab, "bad01", "Bad")
    assert bad["health_reason"].startswith(f"2 infrastructure errors in a row (the last: job {second}: ")
    assert rec(lab, third)["state"] == "Submitted"  # the broken board does not eat the queue
    assert "waiting: no Good board of device type local-shell is online (1 Bad)" in run_cli("status", third).out


def test_a_worker_host_in_maintenance_lets_its_job_finish_and_back_to_active_checks_first(health_lab):
    from tasks import config

    lab = health_lab
    host = config.hostname()  # the workers of this lab run here
    lab.start_worker("loc01", wait=False)
    first_check = wait_health(lab, "loc01", "Good")["hc_last_job"]
    lab.wait_idle("loc01")
    path, flag = held_job(lab, "held")
    running = submit(path)
    wait_state(lab, running, ("Running",))
    result = run_cli("workers", "set-health", host, "maintenance", "--reason", "kernel update")
    assert result.code == 0 and f"worker {host}: Active -> Maintenance" in result.out, result.err
    waiting = submit(job_file(lab, "waiting"))
    assert rec(lab, running)["state"] == "Running"
    flag.touch()
    assert wait_state(lab, running, FINAL)["state"] == "Complete"  # the running job was not killed
    wait_for(lambda: not board(lab, "loc01").get("job"), 30, "the board to be free")
    assert rec(lab, waiting)["state"] == "Submitted"  # the board is online, Good and free, but its host is not
    assert lab.r().zscore(type_keys("local-shell").idle, "loc01") is None
    assert board(lab, "loc01")["health"] == "Good"
    listed = run_cli("workers").out
    assert any(line.split()[:3] == [host, "Maintenance", "loc01"] for line in listed.splitlines())
    # back to Active: the board's health check first, then the job that waited
    result = run_cli("workers", "set-health", host, "active", "--reason", "rebooted")
    assert result.code == 0 and f"worker {host}: Maintenance -> Active" in result.out, result.err
    check = result.out.split("loc01: health check job ")[1].split()[0]
    assert check != first_check and rec(lab, check)["health_check"] == "1"
    assert wait_state(lab, check, FINAL)["state"] == "Complete"
    after = wait_state(lab, waiting, FINAL)
    assert (after["state"], after["board"]) == ("Complete", "loc01")
    assert int(after["started"]) >= int(rec(lab, check)["ended"])
    assert board(lab, "loc01")["health"] == "Good"


def test_a_health_check_whose_whole_worker_dies_sets_the_board_bad(health_lab):
    import os
    import signal

    lab = health_lab
    hold = lab.base / "hold-checks"
    (lab.base / "held-checks").mkdir()
    (lab.base / "held-checks" / "local-shell.yaml").write_text(local_job("health-check", steps=[
        f"while [ -e {hold} ]; do sleep 0.1; done", "lava-test-case checked --shell true"]))
    lab.env["LAVA_DISPATCH_HEALTH_CHECKS"] = str(lab.base / "held-checks")
    lab.start_worker("watch01", wait=False)  # the other worker, whose heartbeat reaps the lost check
    wait_health(lab, "watch01", "Good")
    hold.touch()  # from now on a health check waits
    lab.start_worker("gone01", wait=False)
    check = wait_for(lambda: board(lab, "gone01").get("hc_job"), 60, "gone01's health check")
    wait_state(lab, check, ("Running",))
    os.kill(lab.workers["gone01"].pid, signal.SIGKILL)  # supervisor and worker (PR_SET_PDEATHSIG): no end written
    ended = wait_state(lab, check, FINAL, 60)  # one lease (15 s) later, reaped by watch01's heartbeat
    assert (ended["state"], ended["error_type"]) == ("Incomplete", "Infrastructure")
    bad = board(lab, "gone01")
    assert bad["health"] == "Bad" and bad["hc_last_job"] == check
    assert bad["health_reason"].startswith(f"health check job {check} Incomplete: worker lost: gone01@")
    assert bad["health_reason"].endswith("(the worker was lost during its health check)")
    assert "health: Bad" in run_cli("devices", "show", "gone01").out
    lab.workers["gone01"].wait(5)
    hold.unlink()
    lab.wait_idle("watch01")
    job_id = submit(job_file(lab, "after"))
    assert wait_state(lab, job_id, FINAL)["board"] == "watch01"
