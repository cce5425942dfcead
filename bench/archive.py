"""How the archive reads scale: 100,000 archived jobs and a 100,000-line log.

    python bench/archive.py                      # SQLite in a temporary directory
    python bench/archive.py --postgres           # a throw-away PostgreSQL database (dropped at the end)
    python bench/archive.py --postgres postgresql://postgres@db.example/postgres

Fills the jobs with bulk inserts (what archive_job stores, without results
or logs, to keep the fill short), archives one job with a 100,000-line log
and one with a 1,000-line log through archive_job, then prints the median
and 99th percentile of: get_job, list_jobs page 1 and a deep page (with and
without a filter), and read_lines of 100 lines at the start, the middle and
the end of the long log and of the short one. Equal log figures mean a page
costs the same whatever the length of the log.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from server import archive, db  # noqa: E402
from server.models import Job  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATES = ("Finished",) * 8 + ("Running", "Submitted")
HEALTHS = ("Complete",) * 7 + ("Incomplete", "Incomplete", "Canceled")
TYPES = ("kvm", "bbb", "panda", "arm64-uboot", "local-shell")


@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if args.postgres is None:
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/lab.sqlite3"
        return
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"lava_dispatch_bench_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    finally:
        db.dispose_engines()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def analyze(engine: Engine) -> None:
    """Table statistics as a lab's autovacuum keeps them (PostgreSQL also sets its visibility map)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def start_server(base: Path, redis_url: str, database_url: str) -> tuple[subprocess.Popen[bytes], int]:
    """A lab server (``lava-dispatch server``) on a free port for a bench: (its process, its port)."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "LAVA_DISPATCH_REDIS_URL": redis_url, "LAVA_DISPATCH_DATABASE_URL": database_url,
           "LAVA_DISPATCH_LAB_DIR": str(base), "PYTHONPATH": str(root)}
    with open(base / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "tasks.cli", "server", "--listen", f"127.0.0.1:{port}",
                                   "--loglevel", "WARNING"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    return server, port


def stop_server(server: subprocess.Popen[bytes], redis: Any) -> None:
    """Stop a bench's lab server, then its private Redis, and close the database engines."""
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    redis.kill()
    db.dispose_engines()


def job_row(n: int) -> dict[str, object]:
    submit = T0 + timedelta(minutes=n)
    return archive.job_values({
        "id": str(n), "job_name": f"smoke test {n}", "submitter": f"user{n % 40}", "device_type": TYPES[n % 5],
        "board": f"{TYPES[n % 5]}-{n % 7:02d}", "state": STATES[n % 10], "health": HEALTHS[n % 10],
        "priority": n % 101, "submit_time": submit, "start_time": submit + timedelta(seconds=3),
        "end_time": submit + timedelta(seconds=95), "tags": ["fast"] if n % 3 else [],
        "definition": f"job_name: smoke test {n}\ndevice_type: {TYPES[n % 5]}\n" + "actions: []\n" * 40})


def log_line(n: int) -> str:
    return (f"- {{dt: '2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}', lvl: target, "
            f"msg: 'line {n}: <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=case-{n} RESULT=pass>'}}")


def fill(engine: Engine, jobs: int) -> float:
    started = time.perf_counter()
    batch = 5000
    for first in range(1, jobs + 1, batch):
        with db.session(engine, write=True) as s:
            s.execute(insert(Job), [job_row(n) for n in range(first, min(first + batch, jobs + 1))])
    return time.perf_counter() - started


def timed(call: Callable[[], object], samples: int) -> tuple[float, float]:
    call()  # warm: the first call pays for caches, not for the query
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", nargs="?", const=os.environ.get(
        "LAVA_DISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server's admin URL: the bench creates and drops its own database there")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--log-lines", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()

    with database(args) as url:
        engine = db.get_engine(url)
        print(f"database: {engine.dialect.name} ({db.display_url(engine)})")
        seconds = fill(engine, args.jobs)
        print(f"filled {args.jobs} jobs in {seconds:.1f} s")
        long_id, short_id = str(args.jobs + 1), str(args.jobs + 2)
        started = time.perf_counter()
        archive.archive_job({"id": long_id, "device_type": "kvm", "state": "Finished", "submit_time": T0},
                            [], (log_line(n) for n in range(args.log_lines)), engine=engine)
        print(f"archive_job with a {args.log_lines}-line log: {time.perf_counter() - started:.2f} s")
        archive.archive_job({"id": short_id, "device_type": "kvm", "state": "Finished", "submit_time": T0},
                            [], (log_line(n) for n in range(1000)), engine=engine)
        analyze(engine)

        total = args.jobs + 2
        rng = random.Random(1)
        page = 25
        deep = total - page
        cases: list[tuple[str, Callable[[], object]]] = [
            ("get_job (random id)", lambda: archive.get_job(str(rng.randint(1, args.jobs)), engine=engine)),
            ("list_jobs page 1 (25, with count)", lambda: archive.list_jobs(limit=page, engine=engine)),
            (f"list_jobs deep page (offset {deep})", lambda: archive.list_jobs(limit=page, offset=deep,
                                                                               engine=engine)),
            ("list_jobs state=Running page 1", lambda: archive.list_jobs(state="Running", limit=page,
                                                                         engine=engine)),
            ("list_jobs device_type=bbb deep page", lambda: archive.list_jobs(
                device_type="bbb", limit=page, offset=args.jobs // 5 - page, engine=engine)),
        ]
        n = args.log_lines
        for job, lines in ((long_id, n), (short_id, 1000)):
            for where, start in (("first", 0), ("middle", lines // 2), ("last", lines - 100)):
                cases.append((f"read_lines {where} 100 of {lines}",
                              lambda job=job, start=start: archive.read_lines(job, start, start + 100,
                                                                              engine=engine)))
        assert archive.read_lines(long_id, n // 2, n // 2 + 100, engine=engine) == [
            log_line(i) for i in range(n // 2, n // 2 + 100)]
        print(f"{'operation':<42} {'p50 ms':>8} {'p99 ms':>8}")
        for name, call in cases:
            p50, p99 = timed(call, args.samples)
            print(f"{name:<42} {p50:8.2f} {p99:8.2f}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
