"""The lab server's API under load: jobs.show, log pages of a 100,000-line log, REST listing of 100,000 jobs.

    python bench/api.py                 # SQLite in a temporary directory
    python bench/api.py --postgres      # a throw-away PostgreSQL database (dropped at the end)

Starts a private redis-server and a real ``lava-dispatch server`` (uvicorn,
its archive worker), fills the archive with 100,000 finished jobs (bulk
inserts), archives a job with a 100,000-line log and one with a 1,000-line
log, puts a running job with a 100,000-line live log in Redis, then times
real HTTP requests from this process, authenticated as a user with a
token: XML-RPC ``scheduler.jobs.show`` (archived and running job),
``scheduler.jobs.logs`` pages of 100 lines at the start, middle and end of
each log (equal figures: a page costs the same whatever the log's length),
and REST ``jobs/`` (page 1 and the last page) and ``jobs/N/``. Each line
gives p50 and p99 of one client's sequential requests and the requests per
second of one and of four concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import requests  # noqa: E402
from archive import analyze, database, fill, log_line, start_server, stop_server  # noqa: E402  (bench/archive.py)
from lab_helpers import RedisServer, wait_for  # noqa: E402

from server import archive, auth, db  # noqa: E402
from tasks.keys import ID_COUNTER, LAB, job_key, log_key  # noqa: E402


def timed(call: Callable[[], object], samples: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) of ``samples`` sequential calls."""
    call()
    times = []
    started = time.perf_counter()
    for _ in range(samples):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], samples / elapsed


def concurrent(make: Callable[[], Callable[[], object]], clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` threads, each with its own connection, for ``seconds``."""
    counts = [0] * clients
    deadline = time.monotonic() + seconds

    def run(index: int) -> None:
        call = make()
        while time.monotonic() < deadline:
            call()
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", nargs="?", const=os.environ.get(
        "LAVA_DISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--log-lines", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each concurrent run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory, database(args) as url:
        base = Path(directory)
        redis = RedisServer(base).start()
        engine = db.get_engine(url)
        print(f"database: {engine.dialect.name}; filling {args.jobs} jobs ...", flush=True)
        fill(engine, args.jobs)
        from sqlalchemy import update

        from server.models import Job

        with db.session(engine, write=True) as s:  # bench/archive.py leaves some Running: here all ended
            s.execute(update(Job).values(state="Finished"))
        long_id, short_id, live_id = str(args.jobs + 1), str(args.jobs + 2), str(args.jobs + 3)
        for job_id, lines in ((long_id, args.log_lines), (short_id, 1000)):
            archive.archive_job({"id": job_id, "device_type": "kvm", "state": "Finished", "health": "Complete",
                                 "submit_time": "2026-01-01T00:00:00+00:00", "submitter": "bench"},
                                [{"suite": "lava", "case": "job", "result": "pass"}],
                                (log_line(n) for n in range(lines)), engine=engine)
        analyze(engine)
        auth.add_user("bench", engine=engine)
        token = auth.add_token("bench", engine=engine)
        r = redis.client()
        r.set(ID_COUNTER, live_id)
        r.hset(job_key(live_id), mapping={"id": live_id, "name": "live", "state": "Running", "board": "b1",
                                                "device_type": "kvm", "submitter": "bench", "submitted": 1,
                                                "started": 2, "definition": "job_name: live\n"})
        r.zadd(LAB.leases, {live_id: 9e15})
        pipe = r.pipeline(transaction=False)
        for n in range(args.log_lines):
            pipe.xadd(log_key(live_id), {"r": json.dumps({"dt": "t", "lvl": "target", "msg": f"line {n}"})})
            if n % 5000 == 4999:
                pipe.execute()
        pipe.execute()

        server, port = start_server(base, redis.url, url)
        http = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: requests.get(f"{http}/api/v0.2/system/version/", timeout=2).ok, 60, "the server")
            rpc_uri = f"http://bench:{token}@127.0.0.1:{port}/RPC2"

            def rpc_call(method: str, *params: object) -> Callable[[], Callable[[], object]]:
                def make() -> Callable[[], object]:
                    proxy = xmlrpc.client.ServerProxy(rpc_uri, allow_none=True)
                    function = proxy
                    for part in method.split("."):
                        function = getattr(function, part)
                    return lambda: function(*params)
                return make

            def rest_call(path: str) -> Callable[[], Callable[[], object]]:
                def make() -> Callable[[], object]:
                    session = requests.Session()
                    session.headers["Authorization"] = f"Token {token}"
                    return lambda: session.get(f"{http}/api/v0.2/{path}", timeout=30).raise_for_status()
                return make

            n = args.log_lines
            deep = args.jobs + 3 - 50
            cases: list[tuple[str, Callable[[], Callable[[], object]]]] = [
                ("XML-RPC jobs.show (archived job)", rpc_call("scheduler.jobs.show", str(args.jobs // 2))),
                ("XML-RPC jobs.show (running job)", rpc_call("scheduler.jobs.show", live_id)),
            ]
            for label, job_id, lines in (("archived", long_id, n), ("archived", short_id, 1000),
                                         ("live", live_id, n)):
                for where, start in (("start", 0), ("middle", lines // 2), ("end", lines - 100)):
                    cases.append((f"XML-RPC jobs.logs 100 lines at {where} of {lines} ({label})",
                                  rpc_call("scheduler.jobs.logs", job_id, start, start + 100)))
            cases += [(f"REST jobs/ page 1 (50 of {args.jobs + 3})", rest_call("jobs/?limit=50")),
                      (f"REST jobs/ last page (offset {deep})", rest_call(f"jobs/?limit=50&offset={deep}")),
                      ("REST jobs/?health=Incomplete page 1", rest_call("jobs/?limit=50&health=Incomplete")),
                      ("REST jobs/N/ (archived job)", rest_call(f"jobs/{args.jobs // 3}/"))]
            finished, data = xmlrpc.client.ServerProxy(rpc_uri).scheduler.jobs.logs(long_id, n // 2, n // 2 + 3)
            assert finished and data.data.decode().splitlines() == [log_line(i) for i in range(n // 2, n // 2 + 3)]
            print(f"{'request':<58} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'4 clients':>9}")
            for name, make in cases:
                p50, p99, rate = timed(make(), args.samples)
                rate4 = concurrent(make, 4, args.seconds)
                print(f"{name:<58} {p50:7.2f} {p99:7.2f} {rate:7.0f} {rate4:9.0f}", flush=True)
        finally:
            stop_server(server, redis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
