"""The structured job log: one YAML mapping per line, ``{dt, lvl, msg}``.

This is the format LAVA writes to ``output.yaml``, so existing consumers
parse it. Sinks receive every record: a file, a terminal, a Redis stream.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TextIO

LEVELS = ("debug", "info", "warning", "error", "target", "input", "feedback", "results", "exception")
COLOURS = {"debug": "\033[2m", "warning": "\033[33m", "error": "\033[31m", "exception": "\033[31m",
           "target": "\033[36m", "input": "\033[35m", "feedback": "\033[34m", "results": "\033[32m"}

Record = dict[str, Any]
Sink = Callable[[Record], None]


def record_line(record: Record) -> str:
    """The YAML list item for one record (JSON is valid YAML flow style)."""
    return "- " + json.dumps(record, ensure_ascii=False, default=str) + "\n"


class FileSink:
    """Appends records to output.yaml, flushed line by line so nothing is lost."""

    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8", buffering=1)

    def __call__(self, record: Record) -> None:
        self.file.write(record_line(record))

    def close(self) -> None:
        self.file.close()


class TerminalSink:
    """Streams the log live, coloured by level when the stream is a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, min_level: str = "info", colour: bool | None = None):
        self.stream = stream
        self.colour = stream.isatty() if colour is None else colour
        self.show_debug = min_level == "debug"

    def __call__(self, record: Record) -> None:
        level = record["lvl"]
        if level == "debug" and not self.show_debug:
            return
        msg = record["msg"]
        text = msg if isinstance(msg, str) else json.dumps(msg, default=str)
        line = f"{record['dt'][11:23]} {level:8} {text}"
        if self.colour and level in COLOURS:
            line = f"{COLOURS[level]}{line}\033[0m"
        self.stream.write(line + "\n")
        self.stream.flush()


class JobLogger:
    """The log of one job; thread safe (multinode roles may log at once)."""

    def __init__(self, sinks: list[Sink] | None = None, role: str | None = None):
        self.sinks: list[Sink] = list(sinks or [])
        self.role = role
        self.lock = threading.Lock()

    def log(self, level: str, msg: Any, **extra: Any) -> None:
        record: Record = {"dt": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f"),
                          "lvl": level, "msg": msg}
        if self.role:
            record["role"] = self.role
        record.update(extra)
        with self.lock:
            for sink in self.sinks:
                sink(record)

    def debug(self, msg: Any) -> None:
        self.log("debug", msg)

    def info(self, msg: Any) -> None:
        self.log("info", msg)

    def warning(self, msg: Any) -> None:
        self.log("warning", msg)

    def error(self, msg: Any) -> None:
        self.log("error", msg)

    def target(self, msg: str) -> None:
        self.log("target", msg)

    def results(self, result: dict[str, Any]) -> None:
        self.log("results", result)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close:
                close()
