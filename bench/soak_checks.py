"""The soak's end checks: boards double-booked, processes left, memory growth (bench/soak.py)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lab_helpers import live_processes  # tests/, on the soak's path

NO_OP = ("duplicate", "stale", "final", "missing", "already-ran")  # steps that ran nothing (tests/test_lab.py)


def overlaps(intervals: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of jobs whose intervals on one board overlap (intervals: start, end, job)."""
    found = []
    ordered = sorted(intervals)
    for (_, end, a), (start, _, b) in zip(ordered, ordered[1:]):
        if a != b and start < end:
            found.append((a, b))
    return found


def double_booked(finished: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Jobs that ran on one board at once: by their records' Running interval, and by their chain steps.

    ``finished``: job id -> {"record": job record, "steps": chain steps}. A
    record's interval is started..ended (Redis clock, ms); a step's is its
    worker's t0..t1 (s). The steps of one job run by one worker process are one
    interval; a step that did nothing (a duplicate or stale delivery) is left out.
    """
    by_record: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    by_steps: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for job_id, seen in finished.items():
        rec = seen["record"]
        if rec.get("board") and rec.get("started") and rec.get("ended"):
            by_record[rec["board"]].append((float(rec["started"]) / 1000, float(rec["ended"]) / 1000, job_id))
        spans: dict[tuple[str, Any], list[float]] = {}
        for step in seen["steps"]:
            if step.get("outcome") in NO_OP or step.get("t0") is None or step.get("t1") is None:
                continue
            if step.get("board"):
                key = (step["board"], step.get("pid"))
                span = spans.setdefault(key, [step["t0"], step["t1"]])
                span[0], span[1] = min(span[0], step["t0"]), max(span[1], step["t1"])
        for (board, _), (t0, t1) in spans.items():
            by_steps[board].append((t0, t1, job_id))
    found = []
    for source, boards in (("record", by_record), ("steps", by_steps)):
        for board, intervals in boards.items():
            found += [(source, board, a, b) for a, b in overlaps(intervals)]
    return found


def key_patterns(r: Any) -> Counter[str]:
    """The keys of a Redis database by shape (numbers and tokens as ``*``)."""
    shapes: Counter[str] = Counter()
    for key in r.scan_iter(count=1000):
        shapes[re.sub(r"[0-9a-f]{32}|\d+", "*", key)] += 1
    return shapes


def bounded_bytes(r: Any, pattern: str) -> int:
    """Bytes held by the keys matching ``pattern`` (``MEMORY USAGE``): answers kept for retries, which expire."""
    return sum(int(r.memory_usage(key) or 0) for key in r.scan_iter(match=pattern, count=1000))


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, kB) samples, in kB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var * 60


def rss_growth(series: dict[tuple[str, int], list[tuple[float, int]]], run_s: float
               ) -> list[tuple[str, int, int, int, float, float]]:
    """Per worker process that lived at least half the run: (name, pid, first kB, last kB, growth %, kB/min).

    The first quarter of a process' samples is its warm-up (imports on the
    first job) and is left out; first and last are medians of three samples.
    """
    rows = []
    for (name, pid), samples in series.items():
        if len(samples) < 8 or samples[-1][0] - samples[0][0] < run_s / 2:
            continue
        kept = samples[len(samples) // 4:]
        first = sorted(v for _, v in kept[:3])[1]
        last = sorted(v for _, v in kept[-3:])[1]
        rows.append((name, pid, first, last, (last - first) / first * 100, slope_per_minute(kept)))
    return rows


def job_helpers(base: Path) -> list[tuple[int, str]]:
    """Live processes of any job of the lab at ``base``: a job's scratch directory in their command line or
    environment (``<base>/tmp/lava-dispatch-<board>/<job id>``, as tests/lab_helpers.processes_mentioning)."""
    pattern = re.compile(re.escape(str(base / "tmp").encode()) + rb"/lava-dispatch-[^/\0]+/\d+(\.\d+)?(?=[/\0 ]|$)")
    return live_processes(lambda cmdline, environ: bool(pattern.search(cmdline) or pattern.search(environ)))


def lab_processes(base: Path) -> list[tuple[int, str]]:
    """Every live process of the soak's lab: its directory in its command line or environment."""
    needle = str(base).encode()
    return live_processes(lambda cmdline, environ: needle in cmdline or needle in environ)


__all__ = ["bounded_bytes", "children", "double_booked", "key_patterns", "job_helpers", "lab_processes", "overlaps", "rss_growth", "rss_kb",
           "slope_per_minute"]
