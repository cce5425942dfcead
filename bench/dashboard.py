"""The dashboard's pages and /metrics with 10,000 archived jobs: p50 and p95 of real HTTP requests.

    python bench/dashboard.py                 # SQLite in a temporary directory
    python bench/dashboard.py --postgres      # a throw-away PostgreSQL database (dropped at the end)

Starts a private redis-server and a real ``lava-dispatch server``, fills the
archive with ``--jobs`` finished jobs (bench/archive.py's rows, every 7th a
health check), registers the 35 boards those jobs ran on (live
heartbeats, so the device table has its full work: health, state, last
health check of each) and queues ``--queued`` jobs in Redis, then times
anonymous GETs of each page from this process, one client, sequentially.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import requests  # noqa: E402
from archive import TYPES, analyze, database, fill, start_server, stop_server  # noqa: E402  (bench/archive.py)
from lab_helpers import RedisServer, wait_for  # noqa: E402

from server import db  # noqa: E402


def percentiles(url: str, samples: int) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, bytes) of ``samples`` sequential GETs of ``url`` on one connection."""
    session = requests.Session()
    size = len(session.get(url, timeout=30).content)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = session.get(url, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], size


def lab_state(r, jobs: int, queued: int) -> None:
    """The boards of the archived jobs, registered and alive; ``queued`` jobs waiting in the lab's queue."""
    from tasks.keys import LAB, board_key, job_key, type_keys

    now = int(r.time()[0]) * 1000
    pipe = r.pipeline(transaction=False)
    for device_type in TYPES:
        for n in range(7):
            name = f"{device_type}-{n:02d}"
            pipe.sadd(LAB.boards, name)
            pipe.sadd(type_keys(device_type).boards, name)
            pipe.hset(board_key(name), mapping={"device_type": device_type, "tags": "[]", "node": "bench",
                                                 "host": "bench", "pid": 1, "heartbeat": now + 10 ** 9})
            if n == 6:
                pipe.hset(board_key(name), "health", "Maintenance")
    for index in range(queued):
        job_id = str(jobs + 1 + index)
        device_type = TYPES[index % len(TYPES)]
        pipe.hset(job_key(job_id), mapping={"id": job_id, "name": f"queued {index}", "state": "Submitted",
                                            "device_type": device_type, "submitter": "bench",
                                            "submitted": now - index * 1000, "definition": "job_name: q\n"})
        pipe.zadd(LAB.jobs, {job_id: now - index * 1000})
        pipe.zadd(LAB.pending, {job_id: 50 * 10 ** 13 + index})
        pipe.zadd(type_keys(device_type).pending, {job_id: 50 * 10 ** 13 + index})
    pipe.set(LAB.last_id, jobs + queued)
    pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", nargs="?", const=os.environ.get(
        "LAVA_DISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--queued", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory, database(args) as url:
        base = Path(directory)
        redis = RedisServer(base).start()
        engine = db.get_engine(url)
        print(f"database: {engine.dialect.name}; {args.jobs} archived jobs, {args.queued} queued, 35 boards",
              flush=True)
        fill(engine, args.jobs)
        from sqlalchemy import update

        from server.models import Job

        with db.session(engine, write=True) as s:
            s.execute(update(Job).values(state="Finished"))
            s.execute(update(Job).where(Job.number % 7 == 0).values(health_check=True))
        analyze(engine)
        lab_state(redis.client(), args.jobs, args.queued)
        server, port = start_server(base, redis.url, url)
        http = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: requests.get(f"{http}/v1/healthz", timeout=2).ok, 60, "the server")
            pages = [("job list, page 1", "/"),
                     ("job list, device type filter", "/?device_type=kvm"),
                     ("job list, state + submitter filter", "/?state=Finished&submitter=user7"),
                     (f"job list, page {args.jobs // 2 // 50 + 1}", f"/?offset={args.jobs // 2}"),
                     ("job page (archived job)", f"/scheduler/job/{args.jobs // 3}"),
                     ("device table (35 boards, queue)", "/scheduler/alldevices"),
                     ("queue per device type", "/scheduler/queue"),
                     ("device page", "/scheduler/device/kvm-03"),
                     ("/metrics", "/metrics")]
            print(f"{'page':<40} {'p50 ms':>8} {'p95 ms':>8} {'KiB':>6}")
            for name, path in pages:
                p50, p95, size = percentiles(http + path, args.samples)
                print(f"{name:<40} {p50:8.1f} {p95:8.1f} {size / 1024:6.1f}", flush=True)
        finally:
            stop_server(server, redis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
