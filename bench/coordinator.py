"""Latency of the Multinode coordinators.

    python bench/coordinator.py [--redis-url redis://127.0.0.1:6379/0]
                                [--barriers 50] [--messages 50] [--sizes 2,4,8,16]

Prints, for the in-process LocalCoordinator and the RedisCoordinator:

* lava-sync release: for groups of N members, each with its own client (so
  its own Redis connection), the time from the last member's arrival at a
  barrier (just before its ``sync`` call) to the release of every member
  (the last ``sync`` return); median and p95 over ``--barriers`` barriers.
  In each round the last member arrives once all the others are blocked
  in their wait, so the figure is the wake-up of N-1 blocked members.
  Members are threads of this process (the in-process coordinator, and
  Redis) or forked processes (Redis: closer to a lab, where every member is
  a different worker process, usually on another host).
* lava-send -> lava-wait: the time from the start of ``send`` to the return
  of the other member's ``wait``, that member being blocked already;
  median and p95 over ``--messages`` messages.

Thread figures include Python's GIL hand-over between up to 16 threads;
process figures include the scheduling of 16 processes plus Redis on the
machine's cores. Every loop is bounded and every wait has a timeout. Only a
Redis on the loopback interface is used. The bench prints figures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

# Run as a script, sys.path[0] is bench/, where this very file would shadow
# the `coordinator` package: look in the repository instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, _ROOT)

from pipeline.local_coordinator import LocalCoordinator  # noqa: E402

CALL_TIMEOUT = 30.0  # seconds, for every coordinator call of the bench
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class _Member:
    """Runs ``body(index)`` in a thread or a process and reports failures."""

    def __init__(self, kind: str, ctx, body, index: int) -> None:
        self.kind = kind
        if kind == "thread":
            self.error: BaseException | None = None
            self.worker = threading.Thread(target=self._thread, args=(body, index), daemon=True)
        else:
            self.worker = ctx.Process(target=self._process, args=(body, index), daemon=True)

    def _thread(self, body, index) -> None:
        try:
            body(index)
        except BaseException as exc:  # reported by check()
            self.error = exc

    @staticmethod
    def _process(body, index) -> None:
        body(index)  # an exception is a non-zero exit code

    def check(self) -> None:
        if self.worker.is_alive():
            raise RuntimeError("a bench member did not finish in time")
        if self.kind == "thread" and self.error is not None:
            raise self.error
        if self.kind == "process" and self.worker.exitcode != 0:
            raise RuntimeError(f"a bench member process failed (exit code {self.worker.exitcode})")


def run_members(kind: str, size: int, body, deadline: float) -> None:
    ctx = multiprocessing.get_context("fork") if kind == "process" else None
    members = [_Member(kind, ctx, body, i) for i in range(size)]
    for m in members:
        m.worker.start()
    for m in members:
        m.worker.join(max(0.0, deadline - time.monotonic()))
    for m in members:
        if m.worker.is_alive() and kind == "process":
            m.worker.kill()
            m.worker.join(5)
    for m in members:
        m.check()


def bench_barrier(coordinator, size: int, barriers: int, kind: str = "thread", warmup: int = 5) -> list[float]:
    """Median/p95 input: last arrival -> every member released, per barrier.

    In every round one member (a different one each round) arrives last, once
    all the others are blocked in their wait (their ``should_stop`` is
    called just before they block). Between rounds the members meet at a
    local barrier, so that a member released early does not start the next
    round while the others are still being released.
    """
    gid = f"bench-sync-{size}-{uuid.uuid4().hex}"
    members = {f"m{i}": "worker" for i in range(size)}
    coordinator.create_group(gid, members)
    names = list(members)
    rounds = warmup + barriers
    if kind == "process":
        ctx = multiprocessing.get_context("fork")
        arrive, release = ctx.Array("d", size * rounds, lock=False), ctx.Array("d", size * rounds, lock=False)
        between = ctx.Barrier(size, timeout=CALL_TIMEOUT)
        blocked = ctx.Semaphore(0)
    else:
        arrive, release = [0.0] * (size * rounds), [0.0] * (size * rounds)
        between = threading.Barrier(size, timeout=CALL_TIMEOUT)
        blocked = threading.Semaphore(0)
    def body(i):
        # In a forked member redis-py notices the new pid and opens its own
        # connections; every client has its own connection pool anyway.
        client = coordinator.client(gid, names[i])
        try:
            for r in range(rounds):
                between.wait()
                last = r % size
                if i == last:
                    for _ in range(size - 1):
                        if not blocked.acquire(timeout=CALL_TIMEOUT):
                            raise RuntimeError("the other members never blocked")
                    arrive[i * rounds + r] = time.perf_counter()
                    client.sync(f"b{r}", CALL_TIMEOUT)
                else:
                    told = []

                    def should_stop():
                        if not told:
                            told.append(True)
                            blocked.release()
                        return False

                    arrive[i * rounds + r] = time.perf_counter()
                    client.sync(f"b{r}", CALL_TIMEOUT, should_stop=should_stop)
                release[i * rounds + r] = time.perf_counter()
        finally:
            client.close()

    try:
        run_members(kind, size, body, time.monotonic() + rounds * CALL_TIMEOUT)
    finally:
        coordinator.end_group(gid)
    return [
        max(release[i * rounds + r] for i in range(size)) - max(arrive[i * rounds + r] for i in range(size))
        for r in range(warmup, rounds)
    ]


def bench_send_wait(coordinator, messages: int, warmup: int = 5) -> list[float]:
    """send start -> wait return, the waiter being blocked already (threads)."""
    gid = f"bench-send-{uuid.uuid4().hex}"
    coordinator.create_group(gid, {"waiter": "client", "sender": "server"})
    rounds = warmup + messages
    sent = [0.0] * rounds
    got = [0.0] * rounds
    blocked = [threading.Event() for _ in range(rounds)]

    def body(i):
        client = coordinator.client(gid, "waiter" if i == 0 else "sender")
        try:
            for r in range(rounds):
                if i == 0:
                    client.wait(f"m{r}", CALL_TIMEOUT, should_stop=lambda r=r: blocked[r].set() or False)
                    got[r] = time.perf_counter()
                else:
                    if not blocked[r].wait(CALL_TIMEOUT):
                        raise RuntimeError("the waiter never blocked")
                    sent[r] = time.perf_counter()
                    client.send(f"m{r}", {"ipaddr": "192.168.0.3"})
        finally:
            client.close()

    try:
        run_members("thread", 2, body, time.monotonic() + rounds * CALL_TIMEOUT)
    finally:
        coordinator.end_group(gid)
    return [got[r] - sent[r] for r in range(warmup, rounds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("LAVA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--barriers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--sizes", default="2,4,8,16")
    parser.add_argument("--no-redis", action="store_true", help="only the in-process coordinator")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end runs through board consoles")
    parser.add_argument("--e2e-rounds", type=int, default=30)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not 1 <= args.barriers <= 10000 or not 1 <= args.messages <= 10000:
        parser.error("--barriers and --messages must be between 1 and 10000")
    if any(not 2 <= n <= 64 for n in sizes):
        parser.error("group sizes must be between 2 and 64")

    runs = [("local", LocalCoordinator(), None, ["thread"])]
    if not args.no_redis:
        host = urlsplit(args.redis_url).hostname
        if host not in LOOPBACK:
            parser.error(f"the bench only talks to a Redis on 127.0.0.1, not {host!r}")
        from coordinator import RedisCoordinator

        prefix = f"bench-lava-{uuid.uuid4().hex}"
        redis_co = RedisCoordinator(args.redis_url, key_prefix=prefix, end_ttl=5)
        runs.append(("redis", redis_co, prefix, ["thread", "process"]))

    def row(name, measure, n, lat):
        print(
            f"{name:<12} {measure:<36} {n:>3} {len(lat):>7} "
            f"{statistics.median(lat) * 1e3:>10.3f} {p95(lat) * 1e3:>8.3f}",
            flush=True,
        )

    print(f"{'coordinator':<12} {'measure':<36} {'N':>3} {'samples':>7} {'median ms':>10} {'p95 ms':>8}")
    print("-" * 81)
    for name, co, prefix, kinds in runs:
        try:
            for kind in kinds:
                for n in sizes:
                    row(name, f"lava-sync release ({kind} members)", n, bench_barrier(co, n, args.barriers, kind))
            row(name, "lava-send -> lava-wait", 2, bench_send_wait(co, args.messages))
            if not args.no_e2e:
                barriers, sends = bench_end_to_end(co, 4, args.e2e_rounds)
                row(name, "e2e lava-sync (local-shell consoles)", 4, barriers)
                row(name, "e2e lava-send -> lava-wait (consoles)", 4, sends)
        finally:
            if prefix is not None:
                _cleanup(co, prefix)
                co.close()
    return 0


def e2e_job(size: int, rounds: int) -> str:
    """A multinode job whose test shells time lava-sync and lava-send -> lava-wait on the console."""
    now = "$(date +%s.%N)"
    steps = []
    for n in range(rounds):
        steps += [f"echo T_BEFORE {n} $(lava-self) {now}", f"lava-sync b{n}", f"echo T_AFTER {n} $(lava-self) {now}"]
        steps += [f'if [ "$(lava-self)" = node-1 ]; then echo T_SEND {n} {now}; lava-send m{n} n={n}; '
                  f'else lava-wait m{n}; echo T_RECV {n} $(lava-self) {now}; fi']
    body = "".join(f"                - {json.dumps(step)}\n" for step in steps)
    return (
        "job_name: coordinator-e2e\n"
        "timeouts: {job: {minutes: 10}}\n"
        "protocols:\n  lava-multinode:\n"
        f"    roles: {{node: {{device_type: local-shell, count: {size}}}}}\n"
        "    timeout: {seconds: 60}\n"
        "actions:\n"
        "  - boot: {role: node, method: minimal}\n"
        "  - test:\n      role: node\n      timeout: {minutes: 8}\n      definitions:\n"
        "        - from: inline\n          name: e2e\n          path: e2e.yaml\n"
        "          repository:\n            metadata: {name: e2e}\n            run:\n              steps:\n" + body)


def bench_end_to_end(coordinator, size: int, rounds: int) -> tuple[list[float], list[float]]:
    """Barrier release (last T_BEFORE to last T_AFTER) and send -> wait, through local-shell consoles."""
    import tempfile
    from pathlib import Path

    import yaml

    from pipeline.device import load_device
    from pipeline.multinode_local import run_members
    from pipeline.parser import parse_job

    root = Path(__file__).resolve().parent.parent
    device = load_device(root / "sample_jobs" / "devices" / "local01.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = run_members(parse_job(e2e_job(size, rounds)), device, Path(tmp), coordinator)
        bad = {m: o.error for m, o in outcomes.items() if o.state != "Complete"}
        if bad:
            raise SystemExit(f"end-to-end job failed: {bad}")
        marks: dict[tuple[str, int], list[float]] = {}
        for member in outcomes:
            for record in yaml.safe_load((Path(tmp) / member / "output.yaml").read_text()):
                words = str(record["msg"]).split() if record["lvl"] == "target" else []
                if words and words[0] in ("T_BEFORE", "T_AFTER", "T_SEND", "T_RECV"):
                    marks.setdefault((words[0], int(words[1])), []).append(float(words[-1]))
    barriers = [max(marks[("T_AFTER", n)]) - max(marks[("T_BEFORE", n)]) for n in range(rounds)]
    sends = [min(marks[("T_RECV", n)]) - marks[("T_SEND", n)][0] for n in range(rounds)]
    return barriers, sends


def _cleanup(co, prefix: str) -> None:
    """Drop the bench's keys now rather than in end_ttl seconds."""
    r = co._redis
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
