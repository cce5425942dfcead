"""The figures of ended jobs (durations, waits, results, health checks), counted once per job for the whole lab.

The server's archiver calls ``count_job`` when it moves an ended job into
the archive. The first archiving claims the job (``metered`` in its Redis
record), so a job archived twice, or by two servers, is counted once; the
counts live in one Redis hash (``lava:{lab}:metrics``), so every server's
``/metrics`` shows the same lab-wide histograms and counters, exactly as it
shows the same board and queue gauges. They restart from zero only if
Redis loses its data (Prometheus reads that as a counter reset).

Field names in the hash are JSON lists, ``["duration", device type,
bucket]``: no job text is ever parsed back as anything but a label value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from tasks.keys import LAB, job_key

KEY = LAB.metrics
# Seconds a job ran (start to end), and waited (submit to start): boards boot in seconds to hours.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
                    86400.0)
WAIT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
                86400.0)
HISTOGRAMS = {"duration": DURATION_BUCKETS, "wait": WAIT_BUCKETS}
HEALTHS = {"Complete": "Complete", "Incomplete": "Incomplete", "Canceled": "Canceled"}


def _field(*parts: str | int) -> str:
    return json.dumps(list(parts), separators=(",", ":"))


def _bucket(value: float, bounds: tuple[float, ...]) -> int:
    """The index of the first bound ``value`` fits under (len(bounds): +Inf)."""
    return next((index for index, bound in enumerate(bounds) if value <= bound), len(bounds))


def _ms(value: Any) -> int | None:
    text = str(value or "")
    return int(text) if text.isdigit() and text != "0" else None


def is_health_check(record: dict[str, Any]) -> bool:
    return str(record.get("health_check") or "").lower() in ("1", "true", "yes")


def count_job(r: Any, record: dict[str, Any], results: list[dict[str, Any]]) -> bool:
    """Count an ended job (its Redis record, its results); False when it was counted before."""
    job_id = record.get("id")
    health = HEALTHS.get(str(record.get("state")))
    if not job_id or health is None or not r.hsetnx(job_key(job_id), "metered", "1"):
        return False
    device_type = str(record.get("device_type") or "unknown")
    submitted, started, ended = (_ms(record.get(name)) for name in ("submitted", "started", "ended"))
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(KEY, _field("finished", device_type, health), 1)
    if is_health_check(record):
        pipe.hincrby(KEY, _field("health_check", device_type, health), 1)
    for name, begin, end in (("duration", started, ended), ("wait", submitted, started)):
        if begin is not None and end is not None and end >= begin:
            seconds = (end - begin) / 1000
            pipe.hincrby(KEY, _field(name, device_type, _bucket(seconds, HISTOGRAMS[name])), 1)
            pipe.hincrbyfloat(KEY, _field(name + "_sum", device_type), seconds)
    cases: dict[str, int] = {}
    for item in results:
        if item.get("suite") != "lava":
            result = str(item.get("result") or "unknown").lower()
            cases[result] = cases.get(result, 0) + 1
    for result, count in cases.items():
        pipe.hincrby(KEY, _field("test_cases", device_type, result), count)
    pipe.execute()
    return True


def read(r: Any) -> dict[str, Any]:
    """The counts as ``{kind: {labels tuple: value}}``; histograms as ``{device type: (buckets, sum)}``."""
    counters: dict[str, dict[tuple[str, ...], float]] = {"finished": {}, "health_check": {}, "test_cases": {}}
    histograms: dict[str, dict[str, tuple[list[int], float]]] = {name: {} for name in HISTOGRAMS}
    for raw, value in (r.hgetall(KEY) or {}).items():
        try:
            kind, *labels = json.loads(raw)
            number = float(value)
        except (ValueError, TypeError):
            continue
        if kind in counters and len(labels) == 2:
            counters[kind][(str(labels[0]), str(labels[1]))] = number
        elif kind in HISTOGRAMS and len(labels) == 2 and isinstance(labels[1], int):
            buckets, total = histograms[kind].setdefault(str(labels[0]), ([0] * (len(HISTOGRAMS[kind]) + 1), 0.0))
            if 0 <= labels[1] < len(buckets):
                buckets[labels[1]] += int(number)
        elif kind.endswith("_sum") and kind[:-4] in HISTOGRAMS and len(labels) == 1:
            buckets, _ = histograms[kind[:-4]].setdefault(str(labels[0]),
                                                          ([0] * (len(HISTOGRAMS[kind[:-4]]) + 1), 0.0))
            histograms[kind[:-4]][str(labels[0])] = (buckets, number)
    return {**counters, **histograms}


def families() -> Iterator[tuple[str, str, str, tuple[float, ...] | None]]:
    """(kind, metric name, help, buckets) of every figure ``read`` gives."""
    yield "finished", "lava_dispatch_jobs_finished", "Jobs that ended, by device type and health.", None
    yield "health_check", "lava_dispatch_health_checks", "Health-check jobs that ended, by device type and " \
        "health (Complete: the board passed).", None
    yield "test_cases", "lava_dispatch_test_cases", "Test cases of ended jobs (the lava suite aside), by " \
        "device type and result.", None
    yield "duration", "lava_dispatch_job_duration_seconds", "How long jobs ran (start to end), by device type.", \
        DURATION_BUCKETS
    yield "wait", "lava_dispatch_job_wait_seconds", "How long jobs waited from submission to start, by device " \
        "type.", WAIT_BUCKETS


def cumulative(buckets: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Prometheus' buckets (``le``, cumulative count), +Inf last."""
    out, running = [], 0
    for bound, count in zip((*bounds, math.inf), buckets, strict=True):
        running += count
        out.append(("+Inf" if bound == math.inf else f"{bound:g}", float(running)))
    return out


__all__ = ["count_job", "read", "families", "cumulative", "is_health_check", "KEY", "DURATION_BUCKETS",
           "WAIT_BUCKETS"]
