"""The lab behind Redis Sentinel: the primary is killed (SIGKILL) while jobs run, and the lab carries on.

A primary, a replica and three sentinels of the test's own (``tests/sentinel_helpers.py``),
real board workers on ``redis+sentinel://``, local-shell boards. Each job's
test appends a line to a marker file of its own, so a job that ran twice
shows it.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest
import redis
from lab_helpers import Lab, local_job, wait_for
from sentinel_helpers import SentinelSet

pytestmark = pytest.mark.lab

FINAL = ("Complete", "Incomplete", "Canceled")


def submit_retrying(sched, text: str, deadline_s: float = 60.0) -> str:
    """Submit until the lab answers (a failover is under way); the id is what the lab acknowledged."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return sched.submit(text).job_id
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_primary_killed_mid_job(tmp_path, no_leftovers, monkeypatch):
    from tasks.keys import job_key
    from tasks.records import get_job
    from tasks.scheduler import Lab as Scheduler

    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "lab").mkdir()
    sentinels = SentinelSet(tmp_path / "redis", url_options="wait=1&wait_ms=300")
    lab = Lab(sentinels, tmp_path / "lab", lease=15.0,  # type: ignore[arg-type]
              extra_env={"LAVA_DISPATCH_STALL_SECONDS": "5"})
    for key, value in lab.env.items():
        if key.startswith("LAVA_DISPATCH_"):
            monkeypatch.setenv(key, value)
    try:
        sentinels.start()
        boards = ("sen1", "sen2", "sen3")
        for name in boards:
            lab.start_worker(name, wait=False)
        for name in boards:
            lab.wait_idle(name, 90)
        sched = Scheduler(lab.r(), url=sentinels.url)

        def job(name: str, seconds: float) -> str:
            return local_job(name, [f"echo {uuid.uuid4().hex} >> {runs / name}",
                                    f"lava-test-case nap --shell sleep {seconds}"])

        names = [f"before{i}" for i in range(6)]
        acked = {name: sched.submit(job(name, 4)).job_id for name in names}
        wait_for(lambda: sum((runs / n).exists() for n in names) >= 2, 60, "two jobs running their test")

        # Kill the primary while jobs run their test and others wait in the queue.
        started_before = {n for n in names if (runs / n).exists()}
        killed_at = time.monotonic()
        sentinels.primary.process.send_signal(signal.SIGKILL)
        sentinels.primary.process.wait(10)
        probe = submit_retrying(Scheduler(sentinels.client(), url=sentinels.url), job("probe", 0.1))
        accepted_s = time.monotonic() - killed_at
        wait_for(lambda: sentinels.master_port() == sentinels.replica.port, 30, "the replica promoted")
        promoted_s = time.monotonic() - killed_at
        # The new primary never ran SCRIPT LOAD for these clients: forget any script it has, so every
        # long-lived client (workers, this test) meets NOSCRIPT and must load the scripts again.
        sentinels.replica.client().script_flush()
        acked["probe"] = probe
        wait_for(lambda: any((runs / n).exists() for n in {*names, "probe"} - started_before), 90,
                 "a job queued at the kill to start its test")
        resumed_s = time.monotonic() - killed_at
        after = {f"after{i}": submit_retrying(sched, job(f"after{i}", 0.2)) for i in range(3)}
        acked.update(after)

        r = sentinels.client()

        def all_final() -> bool:
            return all((get_job(r, job_id) or {}).get("state") in FINAL for job_id in acked.values())
        wait_for(all_final, 180, "every acknowledged job to end")
        states = {name: get_job(r, job_id)["state"] for name, job_id in acked.items()}
        ran = {name: len((runs / name).read_text().splitlines()) if (runs / name).exists() else 0
               for name in acked}
        print(f"\nsentinel failover: primary killed; submit accepted again after {accepted_s:.2f} s, "
              f"replica promoted after {promoted_s:.2f} s, the first job queued at the kill started its "
              f"test after {resumed_s:.2f} s; jobs={len(acked)} states={states} runs={ran}")
        assert all(count <= 1 for count in ran.values()), f"a job ran its test twice: {ran}"
        for name, state in states.items():
            if state == "Complete":
                assert ran[name] == 1, (name, ran)
        # What was submitted after the failover, and the job submitted during it, ran to the end.
        assert all(states[name] == "Complete" for name in ("probe", *after)), states
        # Nothing acknowledged is lost: every acknowledged job has its record on the new primary.
        assert set(states) == set(acked)
        assert r.info("replication")["role"] == "master"
        assert {b["state"] for b in sched.boards()} == {"idle"}

        # The old primary comes back: the sentinels make it a replica of the new one, and writes are
        # replicated again (the lab's WAIT gets its replica).
        sentinels.primary.start()
        wait_for(lambda: sentinels.replica.client().info("replication").get("connected_slaves") == 1
                 and sentinels.primary.client().info("replication").get("master_link_status") == "up", 60,
                 "the old primary to become a replica of the new one")
        back = submit_retrying(sched, job("back", 0.1))
        assert wait_for(lambda: get_job(r, back)["state"] in FINAL and get_job(r, back), 60,
                        "the last job")["state"] == "Complete"
        assert sched.wait_replicas("check") == 1
        assert sentinels.primary.client().hget(job_key(back), "state") == "Complete"
    finally:
        lab.stop_all()
        sentinels.stop()
