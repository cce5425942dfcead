"""The server's reading of jobs without board workers: a private redis-server and a SQLite archive.

Listing merges the lab's unarchived jobs with the archive's exactly, page
after page; live logs are read by line through their checkpoints; the
LAVA shapes (legacy status, TAP, notify forms, XML-RPC faults).
"""

from __future__ import annotations

import json
import xmlrpc.client
from datetime import UTC, datetime

import pytest
from lab_helpers import RedisServer, make_tempdir, remove_tree

from tasks.keys import LAB, job_key, log_key

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path, monkeypatch):
    base = make_tempdir("server-jobs-")
    redis = RedisServer(base).start()
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_URL", redis.url)
    from server.db import dispose_engines, get_engine
    from server.jobs import JobStore
    from tasks.scheduler import Lab

    engine = get_engine(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    store = JobStore(Lab(redis.client(), url=redis.url), engine)
    store.redis_server = redis
    yield store
    dispose_engines()
    redis.kill()
    remove_tree(base)


def archive(store, job_id: str, **fields) -> None:
    from server.archive import archive_job

    record = {"id": job_id, "job_name": f"job {job_id}", "device_type": "kvm", "state": "Finished",
              "health": "Complete", "submit_time": T0, "submitter": "alice", **fields}
    archive_job(record, [{"suite": "lava", "case": "job", "result": "pass"}], ["- {dt: x, lvl: info, msg: m}"],
                engine=store.engine)


def live(store, job_id: str, state: str, **fields) -> None:
    r = store.r
    r.hset(job_key(job_id), mapping={"id": job_id, "name": f"job {job_id}", "state": state,
                                          "device_type": "kvm", "submitted": 1772366400000, **fields})
    r.zadd(LAB.jobs, {job_id: int(job_id.split(".")[0])})


def test_listing_merges_the_labs_unarchived_jobs_and_the_archive_on_every_page(store):
    for number in list(range(1, 21)) + list(range(25, 31)):
        archive(store, str(number))
    archive(store, "24.0", multinode_group="24")
    archive(store, "24.1", multinode_group="24")
    live(store, "21", "Submitted")
    store.r.zadd(LAB.pending, {"21": 1})
    live(store, "22", "Running", board="qemu01")
    store.r.zadd(LAB.leases, {"22": 1})
    live(store, "23", "Complete")  # ended, older than the archive's newest, not archived yet: listed once it is
    live(store, "30", "Complete")  # archived, not marked so in Redis yet: listed once
    live(store, "31", "Running")
    store.r.zadd(LAB.leases, {"31": 1})
    live(store, "32", "Complete")
    expected = ["32", "31", "30", "29", "28", "27", "26", "25", "24.1", "24.0", "22", "21"] + \
        [str(n) for n in range(20, 0, -1)]
    for limit in (1, 3, 7, 50):
        for offset in range(0, len(expected) + 2):
            count, page = store.listing(limit=limit, offset=offset)
            assert count == len(expected)
            assert [job.id for job in page] == expected[offset:offset + limit], (limit, offset)
    assert [job.id for job in store.listing(state="Running")[1]] == ["31", "22"]
    assert store.listing(state="Running")[0] == 2
    assert [job.id for job in store.listing(health="Unknown")[1]] == ["31", "22", "21"]
    assert store.listing(state="Finished", limit=3)[0] == 29
    with pytest.raises(ValueError):
        store.listing(state="Complete")


def test_a_job_is_answered_from_the_archive_once_archived_and_a_group_id_is_its_first_member(store):
    archive(store, "7", error_type="Test", error_msg="shell died", health="Incomplete")
    live(store, "7", "Incomplete", archived="1")
    job = store.get("7")
    assert job.archived and (job.state, job.health, job.error_msg) == ("Finished", "Incomplete", "shell died")
    live(store, "8", "Running", board="b1", started=1772366401000, visibility="personal")
    job = store.get(8)
    assert not job.archived and (job.state, job.health, job.device, job.visibility) == ("Running", "Unknown", "b1",
                                                                                          "personal")
    archive(store, "9.0", multinode_group="9")
    assert store.get("9").id == "9.0"
    from server.errors import NotFound

    for missing in ("10", "x", "9.5", True):
        with pytest.raises(NotFound):
            store.get(missing)


def test_live_logs_are_read_by_line_through_checkpoints(store):
    from pipeline.log import record_line

    records = [{"dt": f"t{n}", "lvl": "info", "msg": f"line {n}"} for n in range(2500)]
    pipe = store.r.pipeline()
    for record in records:
        pipe.xadd(log_key("5"), {"r": json.dumps(record)})
    pipe.xadd(log_key("5"), {"end": "Complete"})
    pipe.execute()
    lines = [record_line(r).rstrip("\n") for r in records]
    live_logs = store.live_logs
    for start, end in ((0, 10), (995, 1005), (1999, 2001), (2490, None), (2499, 3000), (2500, None), (0, None)):
        assert live_logs.read("5", start, end) == lines[start:end], (start, end)
    from server.livelog import CHECKPOINT

    assert len(live_logs._index("5").checkpoints) == -(-2500 // CHECKPOINT)


def test_lava_shapes():
    from server import formats, notify
    from server.jobs import JobInfo

    job = JobInfo(id="12", description="d", submitter="alice", device_type="kvm", device="q1", state="Finished",
                  health="Canceled")
    assert formats.legacy_status(job) == (4, "Canceled")
    assert formats.legacy_status(JobInfo("1", "", None, None, None, "Canceling", "Unknown")) == (5, "Canceling")
    assert formats.shown_id("12") == 12 and formats.shown_id("12.1") == "12.1"
    assert notify.substitute("http://h/{ID}/{ STATUS }/{STATUS_STRING}/{NOPE}", job) == "http://h/12/4/canceled/{NOPE}"
    form = notify.form({"id": 12, "metadata": {"a": 1}, "failure_comment": None})
    assert form == {"id": "12", "metadata": '{"a": 1}', "failure_comment": ""}
    tap = formats.tap13([{"suite": "s", "case": "a#b", "result": "fail", "error_msg": "x"}])
    assert tap.splitlines()[:3] == ["TAP version 13", "1..1", "not ok 1 - s a\\#b"]


def test_notify_allow_list(monkeypatch):
    from server.notify import host_allowed

    assert host_allowed("http://127.0.0.1:9/x")
    monkeypatch.setenv("LAVA_DISPATCH_NOTIFY_ALLOW", "ci.example.com, *.kernelci.org")
    assert host_allowed("https://ci.example.com/cb") and host_allowed("https://staging.kernelci.org/cb")
    assert not host_allowed("http://127.0.0.1/x") and not host_allowed("https://kernelci.org.evil.com/")


def test_xmlrpc_faults_in_process(store):
    from server.identity import ANONYMOUS
    from server.service import LabService
    from server.xmlrpc import dispatch

    service = LabService(store.lab, store.engine)

    def call(name, *params):
        try:
            answer = dispatch(xmlrpc.client.dumps(params, name, allow_none=True).encode(), service, ANONYMOUS)
            return xmlrpc.client.loads(answer)[0][0]
        except xmlrpc.client.Fault as fault:
            return fault.faultCode

    assert call("system.version") == "2025.12" and call("system.whoami") is None
    assert call("scheduler.nope") == -32601 and call("scheduler.jobs.show") == -32602
    assert call("scheduler.jobs.submit", "x") == 401 and call("scheduler.jobs.cancel", "1") == 401
    assert call("scheduler.devices.update", "b", None, None, None, None, "GOOD") == 401
    assert call("scheduler.jobs.show", "404") == 404
    archive(store, "3")
    assert call("scheduler.jobs.logs", "3", "x") == 400
    finished, data = call("scheduler.jobs.logs", "3", 0, None)
    assert finished is True and data.data == b"- {dt: x, lvl: info, msg: m}\n"
    assert call("results.get_testjob_results_yaml", "3") == 401
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(dispatch(b"<not xml", service, ANONYMOUS))
    assert fault.value.faultCode == -32600


def test_redis_away_is_unavailable_not_an_internal_error(store):
    from server.errors import Unavailable
    from server.identity import ANONYMOUS
    from server.service import LabService
    from server.xmlrpc import dispatch

    store.redis_server.kill()
    with pytest.raises(Unavailable, match="Redis cannot be reached"):
        dispatch(xmlrpc.client.dumps(("1",), "scheduler.jobs.show").encode(), LabService(store.lab, store.engine),
                 ANONYMOUS)
