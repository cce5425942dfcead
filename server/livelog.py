"""Reading a running job's log (its Redis stream) by line number, without reading it from the start each time.

A stream is addressed by entry id, not by line, so a reader that asks for
lines 90,000 to 90,099 (``lavacli jobs logs --follow`` asks for the lines
after the ones it has) would otherwise read 90,000 entries first. Each
process keeps, for the jobs it was asked about lately, the entry id of every
``CHECKPOINT``-th line: a page then reads at most ``CHECKPOINT`` entries
more than it returns, and the index grows with the new lines only.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pipeline.log import record_line
from tasks.keys import log_key

CHECKPOINT = 100
BATCH = 1000


@dataclass
class _Index:
    checkpoints: list[str] = field(default_factory=list)  # entry id of line 0, CHECKPOINT, 2*CHECKPOINT, ...
    lines: int = 0  # lines counted so far
    last: str = "0-0"  # the last entry id counted
    lock: threading.Lock = field(default_factory=threading.Lock)


def _line(fields: dict[str, str]) -> str | None:
    raw = fields.get("r")
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record_line(record).rstrip("\n")


class LiveLogs:
    """Line-addressed reads of the lab's log streams, with a per-job index of checkpoints (LRU of jobs)."""

    def __init__(self, r: Any, max_jobs: int = 256):
        self.r = r
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, _Index] = OrderedDict()
        self._lock = threading.Lock()

    def _index(self, job_id: str) -> _Index:
        with self._lock:
            index = self._jobs.get(job_id)
            if index is None:
                index = self._jobs[job_id] = _Index()
                while len(self._jobs) > self.max_jobs:
                    self._jobs.popitem(last=False)
            else:
                self._jobs.move_to_end(job_id)
            return index

    def _extend(self, key: str, index: _Index, upto: int | None) -> None:
        """Count lines until ``upto`` (None: the end of the stream), noting checkpoints on the way."""
        while upto is None or index.lines <= upto:
            entries = self.r.xrange(key, min=f"({index.last}" if index.last != "0-0" else "-", count=BATCH)
            for entry_id, fields in entries:
                index.last = entry_id
                if "r" in fields:
                    if index.lines % CHECKPOINT == 0:
                        index.checkpoints.append(entry_id)
                    index.lines += 1
            if len(entries) < BATCH:
                return

    def read(self, job_id: str, start: int = 0, end: int | None = None) -> list[str]:
        """Lines ``start`` to ``end - 1`` (None: to the end) of the job's live log, as output.yaml lines."""
        if start < 0 or (end is not None and end < start):
            return []
        key = log_key(job_id)
        index = self._index(job_id)
        with index.lock:
            self._extend(key, index, start)
            if start >= index.lines:
                return []
            checkpoint = start // CHECKPOINT
            first = index.checkpoints[checkpoint]
        skip = start - checkpoint * CHECKPOINT
        wanted = None if end is None else end - start
        lines: list[str] = []
        cursor = first
        inclusive = True
        while wanted is None or len(lines) < wanted:
            count = BATCH if wanted is None else skip + (wanted - len(lines))
            entries = self.r.xrange(key, min=cursor if inclusive else f"({cursor}", count=max(count, 1))
            for entry_id, fields in entries:
                cursor = entry_id
                if "r" not in fields:
                    continue
                if skip:
                    skip -= 1
                    continue
                line = _line(fields)
                lines.append(line if line is not None else "- {}")
                if wanted is not None and len(lines) >= wanted:
                    break
            inclusive = False
            if len(entries) < max(count, 1):
                break
        return lines

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)


__all__ = ["LiveLogs", "CHECKPOINT"]
