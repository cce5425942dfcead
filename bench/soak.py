"""A soak of the lab: real local-shell board workers for a set time, with failures thrown at them.

Starts a private redis-server (AOF on, ``appendfsync always``, a free port)
and one ``lava-dispatch worker`` per board (``--boards``), keeps the queue
fed with jobs for ``--minutes``, and meanwhile, one after another in a
shuffled round, every ``--event-seconds``:

- kills a whole board worker (supervisor and Celery worker, SIGKILL) and
  starts it again (the first board is never killed: its worker's memory is
  followed over the whole run);
- kills a board's Celery worker process alone (its supervisor restarts it);
- restarts Redis (SIGTERM, then the same port and AOF: the state is kept).

The jobs are short passing tests, tests that hang until their job timeout,
and long tests canceled at a random moment (queued or running). Job records
expire ``--keep-seconds`` after they end, so Redis's memory after draining
can be compared with its memory before the first job.

At the end it checks: every job submitted reached a final state; no board
ran two jobs at once (Running intervals of the job records, and the chain
steps); no job's process is left once it ended, and nothing of the lab is
left once it is stopped; Redis's ``used_memory`` after draining against
before, and each worker's RSS over time (first vs last, slope). The last
line is for scripts::

    soak: minutes=.. jobs=.. final=.. double_booked=0 leftover=0 redis_mem_start=.. redis_mem_end=.. worker_rss_growth_pct=..

Exit status 0 when the job, booking and process invariants hold (memory is
reported, judged flat or not, and fails the run only with ``--strict-memory``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lab_helpers import Lab, RedisServer, local_job, make_tempdir, remove_tree, wait_for  # noqa: E402
from soak_checks import (  # noqa: E402
    bounded_bytes,
    children,
    double_booked,
    job_helpers,
    key_patterns,
    lab_processes,
    rss_growth,
    rss_kb,
)

FINAL = ("Complete", "Incomplete", "Canceled")
EVENTS = ("kill_worker", "kill_celery", "restart_redis")
KINDS = (("pass", 0.75), ("hang", 0.10), ("cancel", 0.15))
HANG_TIMEOUT_S = 8
DONE_KEYS = "lava:{lab}:done:*"  # a once-script's answer, kept 600 s for a retry (tasks/scripts.py)
ENDED = "lava:{lab}:ended"  # jobs that ended, for the lab server's archiver (the newest 100,000)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.base = make_tempdir("lava-soak-")
        self.redis = RedisServer(self.base)
        keep_days = args.keep_seconds / 86400
        self.lab = Lab(self.redis, self.base, lease=args.lease,
                       extra_env={"LAVA_DISPATCH_KEEP_DAYS": f"{keep_days:.8f}", "LAVA_DISPATCH_STALL_SECONDS": "10"})
        self.boards = [f"soak{i + 1}" for i in range(args.boards)]
        self.kind: dict[str, str] = {}  # job id -> kind
        self.cancel_at: dict[str, float] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.events: Counter[str] = Counter()
        self.submit_errors = 0
        self.redis_down_s: list[float] = []
        self.rss: dict[tuple[str, int], list[tuple[float, int]]] = {}
        self.t0 = time.monotonic()
        self.r: Any = None
        self.sched: Any = None

    # -- the lab

    def start(self) -> None:
        from tasks.config import redis_client
        from tasks.scheduler import Lab as Scheduler

        self.redis.start()
        self.lab.apply_env()
        os.environ["LAVA_DISPATCH_KEEP_DAYS"] = self.lab.env["LAVA_DISPATCH_KEEP_DAYS"]
        for name in self.boards:
            self.lab.start_worker(name, wait=False)
        for name in self.boards:
            self.lab.wait_idle(name, 120)
        self.r = redis_client(self.redis.url, socket_timeout=5)
        self.sched = Scheduler(self.r)

    def used_memory(self) -> tuple[int, int]:
        """Redis's ``used_memory``, and the part of it that is neither the script cache nor a bounded key.

        Bounded: a once-script's answer (kept 600 s), the archiver's list of ended jobs (the newest
        100,000; a lab server takes them), which a lab without a server only fills up to its bound.
        """
        info = self.r.info("memory")
        used = int(info["used_memory"])
        bounded = bounded_bytes(self.r, DONE_KEYS) + int(self.r.memory_usage(ENDED) or 0)
        return used, used - int(info.get("used_memory_scripts", 0)) - bounded

    def job_text(self, kind: str, n: int) -> str:
        if kind == "hang":
            return local_job(f"soak-hang-{n}", [f"lava-test-case hang --shell sleep 3600.{n:06d}"],
                             timeout_s=HANG_TIMEOUT_S)
        if kind == "cancel":
            return local_job(f"soak-cancel-{n}", ["lava-test-case long --shell sleep 30"], timeout_s=60)
        nap = self.rng.choice((0.1, 0.3, 0.8, 1.5))
        return local_job(f"soak-pass-{n}", [f"lava-test-case nap --shell sleep {nap}"], timeout_s=60)

    def submit_one(self) -> None:
        kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        try:
            job_id = self.sched.submit(self.job_text(kind, len(self.kind))).job_id
        except Exception:  # noqa: BLE001 - Redis restarting: try again on the next round
            self.submit_errors += 1
            return
        self.kind[job_id] = kind
        if kind == "cancel":
            self.cancel_at[job_id] = time.monotonic() + self.rng.uniform(0.2, 8.0)

    def unfinished(self) -> list[str]:
        return [job_id for job_id in self.kind if job_id not in self.finished]

    def collect(self) -> None:
        """Read the record and steps of every job that ended (before its keys expire)."""
        from tasks.keys import job_key
        from tasks.records import get_job, steps

        ids = self.unfinished()
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(job_key(job_id), "state")
        for job_id, state in zip(ids, pipe.execute()):
            if state in FINAL:
                self.finished[job_id] = {"record": get_job(self.r, job_id), "steps": steps(self.r, job_id)}

    def cancel_due(self) -> None:
        now = time.monotonic()
        for job_id, when in list(self.cancel_at.items()):
            if when <= now and job_id not in self.finished:
                self.sched.cancel(job_id)
                self.events["cancels"] += 1
                del self.cancel_at[job_id]

    def sample_rss(self) -> None:
        now = time.monotonic() - self.t0
        for name, process in self.lab.workers.items():
            for pid in [process.pid, *children(process.pid)]:
                kb = rss_kb(pid)
                if kb:
                    role = "supervisor" if pid == process.pid else "worker"
                    self.rss.setdefault((f"{name}/{role}", pid), []).append((now, kb))

    # -- failures

    def event(self, what: str) -> None:
        self.events[what] += 1
        if what == "restart_redis":
            down = time.monotonic()
            self.redis.stop()
            self.redis.start()
            self.redis_down_s.append(time.monotonic() - down)
            return
        name = self.rng.choice(self.boards[1:] or self.boards)
        process = self.lab.workers[name]
        if what == "kill_celery":
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            return
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        self.lab.start_worker(name, wait=False)

    # -- the run

    def run(self) -> None:
        deadline = self.t0 + self.args.minutes * 60
        next_event = self.t0 + self.args.event_seconds
        next_sample = self.t0
        round_: list[str] = []
        while time.monotonic() < deadline:
            try:
                self.collect()
                self.cancel_due()
                while len(self.unfinished()) < 2 * len(self.boards):
                    before = len(self.kind)
                    self.submit_one()
                    if len(self.kind) == before:
                        break
            except Exception:  # noqa: BLE001 - Redis restarting
                pass
            if time.monotonic() >= next_sample:
                self.sample_rss()
                next_sample += self.args.sample_seconds
            if time.monotonic() >= next_event:
                round_ = round_ or self.rng.sample(EVENTS, len(EVENTS))
                self.event(round_.pop())
                next_event += self.args.event_seconds
            time.sleep(0.2)

    def drain(self) -> float:
        """Until every job submitted is final (the soak's cancels still go out); seconds it took."""
        started = time.monotonic()

        def drained() -> bool:
            self.collect()
            self.cancel_due()
            self.sample_rss()
            return not self.unfinished()
        wait_for(drained, HANG_TIMEOUT_S + 4 * self.args.lease + 120, "every job to end", interval=0.5)
        for name in self.boards:
            self.lab.wait_idle(name, 120)
        return time.monotonic() - started

    def expire(self) -> None:
        """Until the finished jobs' keys have expired (their records kept ``--keep-seconds``)."""
        def gone() -> bool:
            return not any(True for _ in self.r.scan_iter(match="lava:{job:*", count=1000))
        wait_for(gone, self.args.keep_seconds + 60, "the finished jobs' keys to expire", interval=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--boards", type=int, default=4)
    parser.add_argument("--event-seconds", type=float, default=None,
                        help="seconds between two failures (default: a sixth of the run, at most 30)")
    parser.add_argument("--keep-seconds", type=int, default=30, help="how long a finished job's keys stay")
    parser.add_argument("--lease", type=float, default=6.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--strict-memory", action="store_true", help="memory that grows fails the run")
    args = parser.parse_args()
    args.seed = args.seed if args.seed is not None else random.randrange(10 ** 6)
    args.event_seconds = args.event_seconds or min(30.0, args.minutes * 60 / 6)

    soak = Soak(args)
    leftover: list[tuple[int, str]] = []
    try:
        soak.start()
        mem_start, data_start = soak.used_memory()
        keys_start = soak.r.dbsize()
        key_patterns_start = key_patterns(soak.r)
        soak.run()
        drain_s = soak.drain()
        helpers = job_helpers(soak.base)  # every job ended: none of their processes may live
        soak.expire()
        mem_end, data_end = soak.used_memory()
        keys_end = soak.r.dbsize()
        shapes = key_patterns(soak.r) - key_patterns_start
        answers = bounded_bytes(soak.r, DONE_KEYS)
        ended = int(soak.r.memory_usage(ENDED) or 0)
        scripts = int(soak.r.info("memory").get("used_memory_scripts", 0))
        leftover += helpers
    finally:
        soak.lab.stop_all()
        soak.redis.kill()
        try:
            wait_for(lambda: not lab_processes(soak.base), 20, "the lab's processes to end")
        except AssertionError:
            leftover += lab_processes(soak.base)
            for pid, _ in leftover:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        remove_tree(soak.base)

    run_s = args.minutes * 60
    jobs = len(soak.kind)
    final = len(soak.finished)
    booked = double_booked(soak.finished)
    states = Counter((soak.kind[j], seen["record"]["state"]) for j, seen in soak.finished.items())
    growth = rss_growth(soak.rss, run_s)
    worker_growth = max((row[4] for row in growth if row[0].endswith("/worker")), default=float("nan"))
    redis_flat = data_end <= data_start * 1.10 + 256 * 1024
    workers_flat = all(row[4] <= 20 for row in growth)

    print(f"soak of {args.minutes:g} min: {args.boards} local-shell boards, one worker each, Redis with AOF "
          f"(appendfsync always), {os.cpu_count()} CPUs, seed {args.seed}")
    print(f"jobs: {jobs} submitted, {final} final; by kind and state: "
          + ", ".join(f"{k}/{s}={n}" for (k, s), n in sorted(states.items())))
    print(f"events: worker_kills={soak.events['kill_worker']} celery_kills={soak.events['kill_celery']} "
          f"redis_restarts={soak.events['restart_redis']} cancels={soak.events['cancels']} "
          f"hanging={sum(1 for k in soak.kind.values() if k == 'hang')} submit_retries={soak.submit_errors}")
    if soak.redis_down_s:
        print(f"redis restarts: down {min(soak.redis_down_s):.2f}-{max(soak.redis_down_s):.2f} s each")
    print(f"drain after the run: {drain_s:.1f} s; keys {keys_start} before the first job, {keys_end} after "
          f"draining and expiry")
    print("keys added, by shape: " + (", ".join(f"{k}={n}" for k, n in shapes.most_common(6)) or "none"))
    print(f"redis used_memory: {mem_start} B before the first job, {mem_end} B after draining; of these, "
          f"{answers} B are script answers kept 600 s for retries, {ended} B the ended-jobs list for the "
          f"archiver (the newest 100,000), {scripts} B the script cache; the rest: {data_start} B -> "
          f"{data_end} B ({'flat' if redis_flat else 'GROWS'})")
    for name, pid, first, last, pct, slope in sorted(growth):
        print(f"rss {name} (pid {pid}): {first} kB -> {last} kB ({pct:+.1f} %, {slope:+.1f} kB/min)")
    print(f"memory: {'flat' if redis_flat and workers_flat else 'GROWS'}")
    for source, board, a, b in booked:
        print(f"DOUBLE-BOOKED ({source}): board {board} ran jobs {a} and {b} at once")
    for pid, cmdline in leftover:
        print(f"LEFT: {pid} {cmdline}")
    print(f"soak: minutes={args.minutes:g} jobs={jobs} final={final} double_booked={len(booked)} "
          f"leftover={len(leftover)} redis_mem_start={mem_start} redis_mem_end={mem_end} "
          f"worker_rss_growth_pct={worker_growth:.1f}")
    ok = final == jobs and not booked and not leftover
    if args.strict_memory:
        ok = ok and redis_flat and workers_flat
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
