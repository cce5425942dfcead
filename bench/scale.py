"""A simulated lab at the scheduler level: thousands of boards on one Redis, no worker processes.

The scheduler's own Lua scripts and records (``tasks.state.LabState``, the
calls a board worker and ``Lab.submit`` make) run on a private redis-server
(a free port, ``slowlog-log-slower-than 0``), driven by simulated boards
instead of Celery workers: each board registers and becomes idle, heartbeats
(every lease/3 of real time, ``--lease`` 300 s), claims its job's steps, writes a short log,
finishes (Complete, or Incomplete at ``--failure-rate``), and now and then is
lost (``lose``: its worker is gone, it registers again). Jobs arrive at
``--jobs-per-day`` in simulated time; job lengths are log-normal
(``--job-minutes`` median, ``--job-sigma``); time is compressed: events run
as fast as they can, in the order of their simulated time.

Each scale: register the boards; submit until every board is busy and
``--queued`` jobs wait (per board type and tag set as the jobs ask;
``--unplaceable``, 2%, ask for a tag no board has and never run); then run ``--run-jobs`` job ends. Printed:
submit latency (the submit script: record, place or queue), placement latency
(a board's ``finish`` that hands it its next job: board freeing to next job),
Lua time per script (SLOWLOG), Redis memory per board, per queued job and per
finished job (until the archive takes it), and a table over the scales.

Validation (parsing the job, building its pipeline: ``bench/validate.py``)
is not part of the submit figure: it is per job, not per lab size.

``--tasks-from DIR`` runs the same simulation on the scheduler of another
checkout (for a before/after comparison). The last line is for scripts:
``scale: boards=N queued=M submit_p99_ms=X placement_p99_ms=Y lua_max_ms=Z
redis_bytes_per_board=B redis_bytes_per_finished_job=F``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOARD_TAGS = [[]] * 12 + [["usb"]] * 5 + [["usb", "hdmi"]] * 2 + [["fast"]]  # per 20 boards of a type
JOB_TAGS = [[]] * 72 + [["usb"]] * 18 + [["usb", "hdmi"]] * 6 + [["fast"]] * 4
NO_BOARD_TAGS = ["no-such-tag"]  # what --unplaceable jobs ask for: they wait for ever
PRIORITIES = [25] * 10 + [50] * 80 + [75] * 10


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Figures:
    boards: int
    queued: int = 0
    submit: list[float] = field(default_factory=list)  # seconds
    placement: list[float] = field(default_factory=list)
    heartbeat: list[float] = field(default_factory=list)
    lua: dict[str, list[int]] = field(default_factory=dict)  # script -> microseconds per call
    per_board: float = 0.0
    per_queued: float = 0.0
    per_finished: float = 0.0
    finished: int = 0
    lost: int = 0
    wall: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)  # submit answers: scheduled / queued
    # Redis commands one script call made the server run (its own calls included): work, not time
    work: dict[str, list[int]] = field(default_factory=dict)

    def lua_max_ms(self) -> float:
        return max((max(v) for v in self.lua.values() if v), default=0) / 1000


class Sim:
    """One simulated lab of ``boards`` boards over ``types`` device types."""

    def __init__(self, server: Any, args: argparse.Namespace, boards: int, queued: int, run_jobs: int):
        from pipeline.device import load_device
        from tasks.state import LabState

        self.r = server.client()
        self.r.flushall()
        self.r.config_set("slowlog-log-slower-than", 0)
        self.r.config_set("slowlog-max-len", 100000)
        self.lab = LabState(self.r)
        self.args = args
        self.rng = random.Random(args.seed)
        self.fig = Figures(boards)
        self.n_boards, self.n_queued, self.run_jobs = boards, queued, run_jobs
        self.types = [f"sim-{i:02d}" for i in range(min(args.types, boards))]
        self.device_path = ROOT / "sample_jobs" / "devices" / "local01.yaml"
        self.device_text = self.device_path.read_text()
        self.device = load_device(self.device_path)
        self.sha_names = {script.sha: name for name, script in self.lab._scripts.items()}
        self.calls = 0
        self.probing = False
        self.board_type: dict[str, str] = {}
        self.board_tags: dict[str, list[str]] = {}
        self.running: dict[str, tuple[str, int]] = {}  # board -> (job, attempt)
        self.events: list[tuple[float, int, str, str]] = []  # (sim time, seq, kind, board)
        self.seq = 0
        self.sim_now = 0.0
        self.beat_order: list[str] = []
        self.beat_next = 0
        self.beat_due = time.monotonic()
        self.job_text = {t: self._job_text(t) for t in self.types}

    # -- Redis figures

    def memory(self) -> int:
        self.drain_slowlog()
        self.r.execute_command("MEMORY", "PURGE")
        return int(self.r.info("memory")["used_memory"])

    def drain_slowlog(self) -> None:
        for entry in self.r.slowlog_get(100000):
            command = entry.get("command") or b""
            text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
            parts = text.split(" ", 2)
            if len(parts) > 1 and parts[0].upper() in ("EVALSHA", "EVAL"):
                name = self.sha_names.get(parts[1], "?")
                self.fig.lua.setdefault(name, []).append(int(entry["duration"]))
        self.r.slowlog_reset()

    def work(self, name: str, call: Any) -> Any:
        """``call()``; while probing, also how many Redis commands it ran (INFO commandstats)."""
        if not self.probing:
            return call()
        self.r.config_resetstat()
        answer = call()
        stats = self.r.info("commandstats")
        n = sum(v["calls"] - v.get("rejected_calls", 0) - v.get("failed_calls", 0) for k, v in stats.items()
                if k.split("|")[0] not in ("cmdstat_info", "cmdstat_config", "cmdstat_script"))
        self.fig.work.setdefault(name, []).append(n)
        return answer

    def counted(self) -> None:
        self.calls += 1
        if self.calls % 500 == 0:
            self.drain_slowlog()

    # -- the simulated boards

    def _job_text(self, device_type: str) -> str:
        sys.path.insert(0, str(ROOT / "tests"))
        from lab_helpers import local_job

        return local_job("scale", device_type=device_type)

    def register(self, board: str, device_type: str, tags: list[str]) -> None:
        device = self.device.model_copy(update={"device_type": device_type, "tags": tags})
        self.lab.register(board, self.device_text, device, node=f"{board}@sim", pid=1, supervisor_pid=0,
                          pid_file="/nonexistent")
        self.board_type[board] = device_type
        self.counted()
        self.assigned(self.lab.release(board))
        self.counted()

    def assigned(self, assignments: list[Any]) -> None:
        for a in assignments:
            self.running[a.board] = (a.job, a.attempt)
            length = self.rng.lognormvariate(0, self.args.job_sigma) * self.args.job_minutes * 60
            self.seq += 1
            heapq.heappush(self.events, (self.sim_now + length, self.seq, "end", a.board))

    def submit(self) -> str:
        device_type = self.rng.choice(self.types)
        tags = NO_BOARD_TAGS if self.rng.random() < self.args.unplaceable else self.rng.choice(JOB_TAGS)
        prio = self.rng.choice(PRIORITIES)
        t0 = time.perf_counter()
        job_id = self.lab.new_id()
        needs = [{"job": job_id, "device_type": device_type, "tags": tags}]
        fields = {"id": job_id, "name": "scale", "device_type": device_type, "tags": json.dumps(tags),
                  "definition": self.job_text[device_type], "submitter": "scale", "timeout": 120,
                  "client_ref": "", "visibility": "", "pipelines": json.dumps({"x": ["minimal-boot", "lava-test"]})}
        kind, rows = self.work("submit", lambda: self.lab.call("submit", job_id, json.dumps(fields), json.dumps(needs),
                                                               prio, 1, device_type))
        self.fig.submit.append(time.perf_counter() - t0)
        self.fig.answers[kind] = self.fig.answers.get(kind, 0) + 1
        self.counted()
        from tasks.state import Assignment

        self.assigned(Assignment.many(rows) if kind == "scheduled" else [])
        return str(kind)

    def end_job(self, board: str) -> None:
        job, attempt = self.running.pop(board)
        lab = self.lab
        if self.rng.random() < self.args.lose_rate:
            lab.lose(job, board, "worker lost (simulated)", only_started=False)
            self.fig.lost += 1
            self.register(board, self.board_type[board], self.board_tags[board])
            return
        lab.claim(job, board, attempt, 0, "start", f"{board}@sim", 1)
        lab.claim(job, board, attempt, 1, "lava-test", f"{board}@sim", 1)
        from tasks.keys import log_key

        pipe = self.r.pipeline(transaction=False)
        for n in range(self.args.log_lines):
            pipe.xadd(log_key(job), {"r": json.dumps({"dt": "2026-01-01T00:00:00.000000", "lvl": "info",
                                                     "msg": f"simulated line {n} of the job's log"})})
        pipe.execute()
        state = "Incomplete" if self.rng.random() < self.args.failure_rate else "Complete"
        t0 = time.perf_counter()
        _, placed = self.work("finish", lambda: lab.finish(
            job, board, attempt, state, "Test" if state == "Incomplete" else None,
            "simulated failure" if state == "Incomplete" else None, [{"name": "lava-test", "duration": 1.0}],
            [{"name": "quick", "result": "pass" if state == "Complete" else "fail"}],
            {"step": "finalize", "worker": f"{board}@sim"}))
        if any(a.board == board for a in placed):
            self.fig.placement.append(time.perf_counter() - t0)
        self.calls += 2
        self.counted()
        self.fig.finished += 1
        self.assigned(placed)

    def heartbeats(self) -> None:
        """Each board beats every lease/3 of real time, spread evenly."""
        if not self.beat_order:
            return
        interval = self.lab.lease_ms / 3000 / len(self.beat_order)
        now = time.monotonic()
        self.beat_due = max(self.beat_due, now - 10 * interval)  # a client that fell behind does not catch up
        while now >= self.beat_due:
            board = self.beat_order[self.beat_next]
            self.beat_next = (self.beat_next + 1) % len(self.beat_order)
            job = self.running.get(board)
            t0 = time.perf_counter()
            kind, data = self.lab.heartbeat(board, f"{board}@sim", job[0] if job else None)
            self.fig.heartbeat.append(time.perf_counter() - t0)
            self.counted()
            if kind == "idle" and data:
                from tasks.state import Assignment

                self.assigned(Assignment.many(data))
            self.beat_due += interval

    # -- phases

    def run(self) -> Figures:
        started = time.perf_counter()
        mem0 = self.memory()
        for i in range(self.n_boards):
            device_type = self.types[i % len(self.types)]
            board = f"{device_type}-{i // len(self.types):05d}"
            self.board_tags[board] = self.rng.choice(BOARD_TAGS)
            self.register(board, device_type, self.board_tags[board])
        self.beat_order = sorted(self.board_type)
        self.beat_due = time.monotonic()
        self.fig.per_board = (self.memory() - mem0) / self.n_boards
        # fill the boards (a few may wait for tags nobody asks for), then queue
        while len(self.running) < self.n_boards * 0.9 and self.queued() < self.n_queued // 2:
            self.submit()
            self.heartbeats()
        mem1, queued = self.memory(), self.queued()
        while self.queued() < self.n_queued:
            for _ in range(max(1, (self.n_queued - self.queued()) // 2)):
                self.submit()
                self.heartbeats()
        self.fig.queued = self.queued()
        self.fig.per_queued = (self.memory() - mem1) / max(1, self.fig.queued - queued)
        mem2, queued2 = self.memory(), self.fig.queued
        arrival = 86400 / self.args.jobs_per_day * 1.0  # mean simulated seconds between submissions
        next_arrival = self.rng.expovariate(1 / arrival)
        while self.fig.finished + self.fig.lost < self.run_jobs and self.events:
            when, _, _, board = heapq.heappop(self.events)
            while next_arrival < when:
                self.sim_now = next_arrival
                self.submit()
                next_arrival += self.rng.expovariate(1 / arrival)
            self.sim_now = when
            probe = self.fig.finished + self.fig.lost >= self.run_jobs - min(self.args.probe, self.run_jobs // 4)
            if probe and not self.probing:  # memory first: counting commands resets Redis' statistics
                self.fig.per_finished = self.finished_bytes(mem2, queued2)
            self.probing = probe
            self.end_job(board)
            self.heartbeats()
        if not self.probing:
            self.fig.per_finished = self.finished_bytes(mem2, queued2)
        self.fig.wall = time.perf_counter() - started
        return self.fig

    def finished_bytes(self, mem_before: int, queued_before: int) -> float:
        """Memory per job ended since ``mem_before`` (the change of the queue taken out)."""
        done = self.fig.finished + self.fig.lost
        grown = self.memory() - mem_before - (self.queued() - queued_before) * self.fig.per_queued
        return grown / max(1, done)

    def queued(self) -> int:
        from tasks.keys import LAB

        return int(self.r.zcard(LAB.pending))


def work(fig: Figures, name: str) -> str:
    counts = fig.work.get(name) or [0]
    return f"{pct(counts, 50):.0f}, {max(counts)}"


def report(fig: Figures) -> None:
    print(f"\n== {fig.boards} boards, {fig.queued} queued at the start of the run, {fig.finished} jobs ended, "
          f"{fig.lost} lost ({fig.wall:.0f} s); submits: {fig.answers}")
    for what, values in (("submit", fig.submit), ("placement (finish -> next job)", fig.placement),
                         ("heartbeat", fig.heartbeat)):
        print(f"  {what:32} p50 {pct(values, 50) * 1000:6.3f} ms  p99 {pct(values, 99) * 1000:6.3f} ms"
              f"  ({len(values)} calls)")
    print("  Lua time per call (SLOWLOG, µs): script, calls, p50, p99, p99.9, max")
    for name in sorted(fig.lua):
        v = fig.lua[name]
        print(f"    {name:12} {len(v):7d} {pct(v, 50):7.0f} {pct(v, 99):7.0f} {pct(v, 99.9):7.0f} {max(v):7d}")
    for name, counts in sorted(fig.work.items()):
        print(f"  Redis commands per {name} call (last {len(counts)} calls): median {pct(counts, 50):.0f}, "
              f"max {max(counts)}")
    print(f"  Redis memory: {fig.per_board:.0f} B per board, {fig.per_queued:.0f} B per queued job, "
          f"{fig.per_finished:.0f} B per finished job (until archived)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", type=int, default=10000)
    ap.add_argument("--types", type=int, default=50)
    ap.add_argument("--queued", type=int, default=None, help="queued jobs to reach (default: as many as boards)")
    ap.add_argument("--run-jobs", type=int, default=None, help="job ends to simulate (default: as many as boards)")
    ap.add_argument("--jobs-per-day", type=float, default=None, help="default: 10 per board (100,000 at 10,000)")
    ap.add_argument("--job-minutes", type=float, default=10.0, help="median job length (simulated minutes)")
    ap.add_argument("--job-sigma", type=float, default=1.0, help="log-normal sigma of the job length")
    ap.add_argument("--failure-rate", type=float, default=0.05)
    ap.add_argument("--lose-rate", type=float, default=0.01, help="fraction of jobs whose board's worker is lost")
    ap.add_argument("--unplaceable", type=float, default=0.02, help="fraction of jobs asking for a tag no board has")
    ap.add_argument("--log-lines", type=int, default=20)
    ap.add_argument("--scales", default="100,1000", help="smaller lab sizes for the growth table")
    ap.add_argument("--lease", type=float, default=300.0, help="lease and board heartbeat TTL (s)")
    ap.add_argument("--probe", type=int, default=200, help="last job ends (and submits) whose commands are counted")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--tasks-from", type=Path, default=None, help="the checkout whose scheduler to run")
    ap.add_argument("--no-nice", action="store_true", help="leave Redis and this process at normal priority")
    ap.add_argument("--quick", action="store_true", help="a few seconds: 60 boards over 6 types, scales 20")
    args = ap.parse_args(argv)
    if args.quick:
        args.boards, args.types, args.scales, args.log_lines = 60, 6, "20", 3
    args.jobs_per_day = args.jobs_per_day or 10 * args.boards
    sys.path.insert(0, str(args.tasks_from.resolve() if args.tasks_from else ROOT))
    sys.path.insert(1, str(ROOT / "tests"))
    # Boards beat every lease/3 of real time: 10,000 boards at the lab's 15 s lease would need 2,000 beats
    # a second from this one client; with 300 s, 100 a second.
    os.environ["LAVA_DISPATCH_LEASE_SECONDS"] = str(args.lease)
    from lab_helpers import RedisServer, make_tempdir, remove_tree

    base = make_tempdir("scale-")
    server = RedisServer(base, extra=["--appendfsync", "everysec"]).start()
    if not args.no_nice:  # a shared machine: the measured processes (Redis, this client) go first
        try:
            os.setpriority(os.PRIO_PROCESS, server.process.pid, -10)
            os.nice(-5)
        except OSError:
            pass
    try:
        sizes = sorted({int(s) for s in args.scales.split(",") if s.strip()} | {args.boards})
        table = []
        for size in sizes:
            queued = args.queued if args.queued is not None and size == args.boards else size
            run_jobs = args.run_jobs if args.run_jobs is not None and size == args.boards else size
            sim_args = argparse.Namespace(**{**vars(args), "jobs_per_day": args.jobs_per_day * size / args.boards})
            fig = Sim(server, sim_args, size, queued, run_jobs).run()
            report(fig)
            table.append(fig)
    finally:
        server.kill()
        remove_tree(base)
    print("\n| boards | queued | submit p50 / p99 ms | placement p50 / p99 ms | Lua max ms | B/board | B/queued job "
          "| B/finished job | commands per submit / finish (median, max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in table:
        print(f"| {f.boards} | {f.queued} | {pct(f.submit, 50) * 1000:.2f} / {pct(f.submit, 99) * 1000:.2f} "
              f"| {pct(f.placement, 50) * 1000:.2f} / {pct(f.placement, 99) * 1000:.2f} | {f.lua_max_ms():.2f} "
              f"| {f.per_board:.0f} | {f.per_queued:.0f} | {f.per_finished:.0f} | {work(f, 'submit')} / "
              f"{work(f, 'finish')} |")
    f = table[-1]
    print(f"scale: boards={f.boards} queued={f.queued} submit_p99_ms={pct(f.submit, 99) * 1000:.2f} "
          f"placement_p99_ms={pct(f.placement, 99) * 1000:.2f} lua_max_ms={f.lua_max_ms():.2f} "
          f"redis_bytes_per_board={f.per_board:.0f} redis_bytes_per_finished_job={f.per_finished:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
