"""The structured job log: one YAML mapping per line, ``{dt, lvl, msg}``.

This is the format LAVA writes to ``output.yaml``, so existing consumers
parse it. Sinks receive every record: a file, a terminal, a Redis stream.

What the board prints is hostile: every line of output.yaml stays valid
YAML whatever it holds, the terminal never receives its control characters,
and the board's output is stored up to a limit per job
(``LAVA_DISPATCH_MAX_LOG_BYTES``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error", "target", "input", "feedback", "results", "exception")
COLOURS = {"debug": "\033[2m", "warning": "\033[33m", "error": "\033[31m", "exception": "\033[31m",
           "target": "\033[36m", "input": "\033[35m", "feedback": "\033[34m", "results": "\033[32m"}

Record = dict[str, Any]
Sink = Callable[[Record], None]

# JSON leaves these raw, but a YAML reader refuses them (DEL, C1 controls, U+FFFE/U+FFFF) or
# reads them as line breaks (NEL, U+2028, U+2029): escape them as \uXXXX, which JSON and YAML
# double-quoted strings both read back as the same character. A lone surrogate (a job's "\ud800")
# cannot be written as UTF-8 nor read back by libyaml even escaped: it becomes U+FFFD.
YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
# What a terminal would act on: C0 controls (but tab), DEL, C1 controls, and surrogates it cannot encode.
TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def env_limit(name: str, default: int, minimum: int = 1) -> int:
    """A size limit from the worker's environment (the lab admin's), with a clear error if it is not a number."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{name}={text!r}: expected a whole number of bytes") from None
    return max(minimum, value)


MAX_LOG_BYTES = env_limit("LAVA_DISPATCH_MAX_LOG_BYTES", 256 * 1024 * 1024, 0)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with the characters a terminal would act on shown as escapes (\\x1b, \\x9b, ...)."""
    return TERMINAL_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def record_line(record: Record) -> str:
    """The YAML list item for one record (JSON is valid YAML flow style once YAML_UNSAFE is escaped)."""
    return "- " + YAML_UNSAFE.sub(_escape, json.dumps(record, ensure_ascii=False, default=str)) + "\n"


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
        text = printable(msg if isinstance(msg, str) else json.dumps(msg, default=str))
        line = f"{record['dt'][11:23]} {level:8} {text}"
        if self.colour and level in COLOURS:
            line = f"{COLOURS[level]}{line}\033[0m"
        self.stream.write(line + "\n")
        self.stream.flush()


class JobLogger:
    """The log of one job; thread safe (multinode roles may log at once)."""

    def __init__(self, sinks: list[Sink] | None = None, role: str | None = None,
                 max_target_bytes: int = MAX_LOG_BYTES):
        self.sinks: list[Sink] = list(sinks or [])
        self.role = role
        self.lock = threading.Lock()
        self.max_target_bytes = max_target_bytes
        self.target_bytes = 0  # board output logged so far
        self.target_dropped = 0  # board output past the limit, not logged

    def log(self, level: str, msg: Any, **extra: Any) -> None:
        record: Record = {"dt": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
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
        """A line the board printed; past the job's limit it is dropped (the job goes on, its results too)."""
        size = len(msg.encode("utf-8", "replace"))
        if self.target_dropped or self.target_bytes + size > self.max_target_bytes:
            if not self.target_dropped:
                self.warning(f"the board printed more than {self.max_target_bytes} bytes "
                             "(LAVA_DISPATCH_MAX_LOG_BYTES): its further output is not logged "
                             "(its test results still are)")
            self.target_dropped += size
            return
        self.target_bytes += size
        self.log("target", msg)

    def results(self, result: dict[str, Any]) -> None:
        self.log("results", result)

    def close(self) -> None:
        if self.target_dropped:
            self.warning(f"{self.target_dropped} bytes of board output were not logged "
                                 "(over LAVA_DISPATCH_MAX_LOG_BYTES)")
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close:
                close()
