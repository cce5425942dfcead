"""How the lab ends what nobody finished: a health check whose worker vanished, a multinode group never placed.

On a private redis-server without worker processes (as ``test_lab_health.py``): boards are registered by
hand, chains are recorded, not sent; leases expire for real (a one-second lease).
"""

from __future__ import annotations

import pytest
from lab_helpers import wait_for
from test_lab_health import board_up, checks, job_state, no_chains, record  # noqa: F401 - fixtures
from test_lab_multinode import multinode_job
from test_lab_scheduler import lab, make_lab, redis_server, register  # noqa: F401 - fixtures

from tasks.keys import LAB, group_key, job_key, type_index_keys

pytestmark = pytest.mark.usefixtures("no_chains")


@pytest.fixture
def short_lab(redis_server, monkeypatch):  # noqa: F811 - the fixture imported above
    return make_lab(redis_server, monkeypatch, "1")


def lose_worker(lab, job_id: str) -> None:
    """The board's worker stops renewing the job's lease: wait until the lab reaps it."""
    lab.heartbeat(lab.r.hget(job_key(job_id), "board"), "b1@test", None)  # the lab's clock starts
    wait_for(lambda: lab.reap() is not None and job_state(lab, job_id)[0] not in ("Scheduled", "Running", "Submitted"),
             15, f"the lease of {job_id} to expire")


@pytest.mark.parametrize("started", [True, False])
def test_a_health_check_whose_worker_is_lost_sets_the_board_bad(short_lab, checks, started):  # noqa: F811
    lab = short_lab
    checks()
    hc = board_up(lab, "b1").health_check
    assert job_state(lab, hc) == ("Scheduled", "b1")
    if started:
        assert lab.claim(hc, "b1", 1, 0, "start", "b1@test", 4242)[0] == "ok"
    lose_worker(lab, hc)
    rec = lab.r.hgetall(job_key(hc))
    assert rec["state"] == "Incomplete" and rec["error_type"] == "Infrastructure"  # never requeued
    b1 = record(lab, "b1")
    assert b1["health"] == "Bad" and b1["hc_job"] == "" and b1["hc_last_result"] == "Incomplete"
    assert b1["health_reason"].startswith(f"health check job {hc} Incomplete: worker lost: b1@test")
    assert b1["health_reason"].endswith("(the worker was lost during its health check)")
    entry = lab.health_history("b1")[0]
    assert (entry["old"], entry["new"], entry["who"]) == ("Unknown", "Bad", "")
    assert lab.ensure_health_check("b1") is None  # Bad: no new check until an admin says so
    assert lab.queue("local-shell") == []


def test_a_lost_health_check_leaves_an_admins_maintenance(short_lab, checks):  # noqa: F811
    lab = short_lab
    checks()
    hc = board_up(lab, "b1").health_check
    lab.claim(hc, "b1", 1, 0, "start", "b1@test", 4242)
    lab.set_health("b1", "maintenance", who="ops", reason="rewiring")
    lose_worker(lab, hc)
    assert job_state(lab, hc)[0] == "Incomplete"
    b1 = record(lab, "b1")
    assert (b1["health"], b1["health_reason"], b1["health_by"]) == ("Maintenance", "rewiring", "ops")


def test_a_queue_timeout_cancels_a_whole_multinode_group(lab):  # noqa: F811
    register(lab, "b1")  # one board of the type for a group of two: the group waits
    text = multinode_job({"a": 1, "b": 1}, {"a": ["true"], "b": ["true"]})
    text = text.replace("timeouts:\n", "timeouts:\n  queue:\n    seconds: 1\n")
    submitted = lab.submit(text, dispatch=False)
    group, members = submitted.job_id, submitted.members
    assert submitted.state == "Submitted" and len(members) == 2
    assert lab.r.hget(group_key(group), "queue_timeout") == "1"
    assert lab.r.zscore(LAB.queue_until, f"group:{group}") is not None
    wait_for(lambda: lab.reap() is not None and all(job_state(lab, j)[0] == "Canceled" for j in members), 15,
             "the group's queue timeout")
    for j in members:
        rec = lab.r.hgetall(job_key(j))
        assert rec["error_type"] == "Canceled"
        assert rec["error"] == (f"queue timeout: multinode group {group} not scheduled within 1 s (timeouts.queue): "
                                "it needs 2 boards of device type local-shell at once, which has 1 Good")
    assert lab.r.hget(group_key(group), "state") == "Ended"  # its coordinator group ended too
    assert lab.queue("local-shell") == [] and lab.r.zcard(type_index_keys("local-shell").groups) == 0
    assert lab.r.zcard(LAB.pending) == 0
    assert record(lab, "b1").get("job", "") == ""  # the board was never reserved


def test_a_group_placed_before_its_queue_timeout_is_not_canceled(lab):  # noqa: F811
    register(lab, "b1")
    text = multinode_job({"a": 1, "b": 1}, {"a": ["true"], "b": ["true"]})
    text = text.replace("timeouts:\n", "timeouts:\n  queue:\n    seconds: 1\n")
    submitted = lab.submit(text, dispatch=False)
    assert submitted.state == "Submitted"
    register(lab, "b2")  # the second board frees: the group is placed, all at once
    assert sorted(job_state(lab, j)[1] for j in submitted.members) == ["b1", "b2"]
    wait_for(lambda: lab.reap() is not None and lab.r.zcard(LAB.queue_until) == 0, 15, "the deadline to pass")
    assert [job_state(lab, j)[0] for j in submitted.members] == ["Scheduled", "Scheduled"]
    assert lab.r.hget(group_key(submitted.job_id), "state") == "Scheduled"
