"""A finished job's log (LAVA's output.yaml), stored compressed in chunks and read by line range.

The log is cut into chunks of ``CHUNK_LINES`` lines; each chunk is one row of
``log_chunks``: the lines joined by newlines, zlib-compressed. Reading a
range reads only the chunks that hold it (two index lookups), so a page of
a 100,000-line log costs what a page of a short one does. Writing takes an
iterator and keeps one chunk in memory. Being rows, the logs are in the
same backup as the rest of the archive and any server process can read them.

Lines are numbered from 0 and ranges are half-open, as Python slices and
LAVA's REST ``logs/?start=&end=`` are: ``read_lines(job, 10, 20)`` gives
lines 10 to 19.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from sqlalchemy import Engine, Select, delete, func, insert, select
from sqlalchemy.orm import Session

from server.db import session
from server.models import LogChunk

CHUNK_LINES = 1000
COMPRESS_LEVEL = 6


def _split(lines: Iterable[str | bytes]) -> Iterator[str]:
    """One line per item, its line ending removed; an item holding several lines gives each of them."""
    for item in lines:
        line = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        if "\n" in line:
            yield from line.split("\n")
        else:
            yield line


def compress_chunk(lines: list[str]) -> bytes:
    return zlib.compress("\n".join(lines).encode("utf-8"), COMPRESS_LEVEL)


def decompress_chunk(data: bytes, count: int) -> list[str]:
    lines = zlib.decompress(data).decode("utf-8").split("\n")
    if len(lines) != count:
        raise ValueError(f"a log chunk holds {len(lines)} lines, not the {count} its row says")
    return lines


def write_log(s: Session, job_id: str, lines: Iterable[str | bytes], chunk_lines: int = CHUNK_LINES) -> int:
    """Replaces the job's log by ``lines`` inside the caller's transaction; returns the number of lines."""
    if chunk_lines < 1:
        raise ValueError("chunk_lines must be at least 1")
    s.execute(delete(LogChunk).where(LogChunk.job_id == job_id))
    total = 0
    chunk_no = 0
    buffer: list[str] = []

    def flush() -> None:
        nonlocal chunk_no
        # A Core insert per chunk: no ORM object is kept, memory stays bounded by one chunk.
        s.execute(insert(LogChunk), [{"job_id": job_id, "chunk_no": chunk_no, "first_line": total - len(buffer),
                                      "line_count": len(buffer), "data": compress_chunk(buffer)}])
        chunk_no += 1
        buffer.clear()

    for line in _split(lines):
        buffer.append(line)
        total += 1
        if len(buffer) >= chunk_lines:
            flush()
    if buffer:
        flush()
    return total


def _line_count(s: Session, job_id: str) -> int:
    row = s.execute(select(LogChunk.first_line, LogChunk.line_count).where(LogChunk.job_id == job_id)
                    .order_by(LogChunk.first_line.desc()).limit(1)).first()
    return 0 if row is None else row.first_line + row.line_count


def line_count(job_id: str, *, engine: Engine | None = None) -> int:
    """How many lines the job's archived log has (0: none archived); one index lookup."""
    with session(engine) as s:
        return _line_count(s, str(job_id))


def chunks_query(job_id: str, start: int, end: int) -> Select[int, int, bytes]:
    """The query for the chunks overlapping lines [start, end): from the chunk holding ``start`` on."""
    first = (select(func.max(LogChunk.first_line))
             .where(LogChunk.job_id == job_id, LogChunk.first_line <= start).scalar_subquery())
    return (select(LogChunk.first_line, LogChunk.line_count, LogChunk.data)
            .where(LogChunk.job_id == job_id, LogChunk.first_line >= func.coalesce(first, 0),
                   LogChunk.first_line < end)
            .order_by(LogChunk.first_line))


def read_lines(job_id: str, start: int = 0, end: int | None = None, *, engine: Engine | None = None) -> list[str]:
    """Lines ``start`` to ``end - 1`` of the job's log (fewer at its end; ``end=None``: to the end)."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError("line numbers start at 0")
    with session(engine) as s:
        if end is None:
            end = _line_count(s, str(job_id))
        if end <= start:
            return []
        lines: list[str] = []
        for row in s.execute(chunks_query(str(job_id), start, end)):
            chunk = decompress_chunk(row.data, row.line_count)
            lo = max(start - row.first_line, 0)
            hi = min(end - row.first_line, row.line_count)
            lines.extend(chunk[lo:hi])
        return lines


def iter_lines(job_id: str, start: int = 0, *, engine: Engine | None = None) -> Iterator[str]:
    """Every line from ``start`` on, a chunk at a time (a whole output.yaml download, in bounded memory)."""
    position = start
    while True:
        with session(engine) as s:
            rows = s.execute(chunks_query(str(job_id), position, position + 1).limit(1)).all()
            if not rows:
                return
        row = rows[0]
        if position >= row.first_line + row.line_count:
            return
        chunk = decompress_chunk(row.data, row.line_count)
        yield from chunk[position - row.first_line:]
        position = row.first_line + row.line_count
