"""The figures behind /metrics and the dashboard without workers: a private redis-server and a SQLite archive.

An ended job is counted once however often it is archived; health checks
are counted apart and found as each board's last one; the queue per
device type counts each member of a multinode group for its own type.
"""

from __future__ import annotations

import json

import pytest
from lab_helpers import RedisServer, make_tempdir, remove_tree

from tasks.keys import LAB, group_key, job_key

T0 = 1_772_366_400_000  # ms


@pytest.fixture
def r():
    base = make_tempdir("server-jobmetrics-")
    redis = RedisServer(base).start()
    yield redis.client()
    redis.kill()
    remove_tree(base)


def ended(r, job_id: str, state: str = "Complete", **fields) -> dict:
    record = {"id": job_id, "state": state, "device_type": "kvm", "submitted": T0, "started": T0 + 1500,
              "ended": T0 + 1500 + 95_000, **fields}
    r.hset(job_key(job_id), mapping=record)
    return {k: str(v) for k, v in record.items()}


def test_an_ended_job_is_counted_once_with_its_histograms(r):
    from server import jobmetrics

    record = ended(r, "7")
    results = [{"suite": "0_x", "case": "a", "result": "pass"}, {"suite": "0_x", "case": "b", "result": "fail"},
               {"suite": "lava", "case": "job", "result": "pass"}]
    assert jobmetrics.count_job(r, record, results) is True
    assert jobmetrics.count_job(r, record, results) is False  # archived again, or by another server
    assert jobmetrics.count_job(r, ended(r, "8", "Incomplete", health_check="1"), []) is True
    assert jobmetrics.count_job(r, {"id": "9", "state": "Running"}, []) is False  # not ended: never counted
    r.hset(jobmetrics.KEY, "not json", "1")  # a stray field is ignored, not a failed scrape
    figures = jobmetrics.read(r)
    assert figures["finished"] == {("kvm", "Complete"): 1, ("kvm", "Incomplete"): 1}
    assert figures["health_check"] == {("kvm", "Incomplete"): 1}
    assert figures["test_cases"] == {("kvm", "pass"): 1, ("kvm", "fail"): 1}
    buckets, total = figures["duration"]["kvm"]
    assert total == pytest.approx(190.0)
    cumulative = dict(jobmetrics.cumulative(buckets, jobmetrics.DURATION_BUCKETS))
    assert (cumulative["60"], cumulative["120"], cumulative["+Inf"]) == (0, 2, 2)
    waits = dict(jobmetrics.cumulative(figures["wait"]["kvm"][0], jobmetrics.WAIT_BUCKETS))
    assert (waits["1"], waits["2"]) == (0, 2)


def test_queues_count_group_members_by_type_and_say_when_no_good_board_serves(r):
    from server import labview

    for job_id, device_type, submitted in (("1", "kvm", T0 + 5000), ("2.0", "kvm", T0), ("2.1", "bbb", T0)):
        r.hset(job_key(job_id), mapping={"id": job_id, "device_type": device_type, "submitted": submitted,
                                         "state": "Submitted"})
    r.hset(group_key("2"), "members", json.dumps(["2.0", "2.1"]))
    r.zadd(LAB.pending, {"1": 1, "group:2": 2})
    devices = [{"hostname": "kvm01", "type": "kvm", "health": "Good", "online": True},
               {"hostname": "kvm02", "type": "kvm", "health": "Maintenance", "online": True},
               {"hostname": "bbb01", "type": "bbb", "health": "Bad", "online": True}]
    queues = {q.name: q for q in labview.queues(r, devices)}
    assert (queues["kvm"].queued, queues["kvm"].oldest_ms, queues["kvm"].good) == (2, T0, 1)
    assert not queues["kvm"].no_good_board
    assert (queues["bbb"].queued, queues["bbb"].boards, queues["bbb"].no_good_board) == (1, 1, True)
    assert queues["kvm"].oldest_seconds(T0 + 10_000) == 10.0


def test_each_boards_last_health_check_comes_from_the_archive(tmp_path):
    from server import archive, labview
    from server.db import dispose_engines, get_engine

    engine = get_engine(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    for job_id, board, check, health in (("1", "kvm01", True, "Complete"), ("2", "kvm01", True, "Incomplete"),
                                         ("3", "kvm01", False, "Complete"), ("4", "kvm02", False, "Complete")):
        archive.archive_job({"id": job_id, "device_type": "kvm", "board": board, "state": "Finished",
                             "health": health, "health_check": check, "submit_time": "2026-03-01T12:00:00"},
                            [], [], engine=engine)
    found = labview.last_health_checks(["kvm01", "kvm02", "kvm03"], engine)
    assert {board: (job.id, job.health) for board, job in found.items()} == {"kvm01": ("2", "Incomplete")}
    assert labview.last_health_checks([], engine) == {}
    dispose_engines()
