"""A shell connection to a board: a pexpect session over whatever reaches its console.

That is QEMU's serial console on stdio, ``telnet`` to a ser2net port,
``socat`` to a socket, or a local ``sh``. Every wait is bounded by a
timeout, checks the job's cancel flag and deadlines at least every 0.5 s,
and logs what the board printed, one ``target`` line at a time.

pexpect starts the process and reads from it; the searching is ours, so
that each character is examined a bounded number of times whatever the
board prints (pexpect searched its whole buffer again after every read: a
long line without a newline cost quadratic time).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import pexpect

from pipeline.errors import ActionTimeout, Bug, InfrastructureError
from pipeline.log import JobLogger, env_limit
from pipeline.processes import ProcessRegistry, kill_group

# Terminal control sequences (busybox ash asks for the cursor position after each prompt).
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
POLL = 0.5
# A line the board prints without a newline is cut into pieces of at most this many characters,
# in the log and for the test shell's signals: nothing is lost, memory and time stay linear.
MAX_LINE = env_limit("LAVA_DISPATCH_MAX_LINE_BYTES", 64 * 1024, 4096)
# A piece ends before the last '<' of its final MARKER_ROOM characters, so that a signal that
# follows long output on the same line stays whole in the next piece.
MARKER_ROOM = min(4096, MAX_LINE // 4)
# A pattern is searched for in the new data plus this many characters before it (a prompt split
# over reads); what no pattern matched is kept up to MAX_LINE characters (the output of run()).
OVERLAP = 4096
READ_SIZE = 65536


def cut_point(text: str, start: int) -> int:
    """Where the piece of ``text`` from ``start`` ends when the line is longer than MAX_LINE."""
    cut = start + MAX_LINE
    marker = text.rfind("<", cut - MARKER_ROOM, cut)
    return marker if marker > start else cut


class TargetLog:
    """Turns the console byte stream into ``target`` log lines (pieces of at most MAX_LINE characters)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.parts: list[str] = []  # the partial line, in the pieces it arrived in
        self.size = 0
        self.secrets: list[str] = []  # runner nonces: never written to the log

    def write(self, data: str) -> None:
        start = 0
        while True:
            end = data.find("\n", start)
            if end < 0:
                break
            self._pieces(data[start:end], final=True)
            start = end + 1
        if start < len(data):
            self.parts.append(data[start:])
            self.size += len(data) - start
            if self.size >= MAX_LINE:
                self._pieces("", final=False)

    def _pieces(self, tail: str, final: bool) -> None:
        """Emit the partial line plus ``tail``, cut at MAX_LINE; keep a short remainder unless ``final``."""
        text = "".join(self.parts) + tail if self.parts else tail
        start = 0
        while len(text) - start >= MAX_LINE:
            cut = cut_point(text, start)
            self._emit(text[start:cut])
            start = cut
        rest = text[start:]
        if final:
            self._emit(rest)
            rest = ""
        self.parts = [rest] if rest else []
        self.size = len(rest)

    def _emit(self, line: str) -> None:
        clean = ANSI.sub("", line)
        for secret in self.secrets:
            if secret in clean:
                clean = clean.replace(f" RUNNER={secret}", "").replace(secret, "(nonce)")
        if clean.strip():
            self.emit(clean)

    def flush(self) -> None:
        """pexpect flushes after every read: keep a partial line until its end arrives."""

    def drain(self) -> None:
        """Log a partial line now (a prompt, the last words before a timeout)."""
        self._pieces("", final=True)


class ConsoleBuffer:
    """What the board printed that no wait has consumed yet.

    ``search`` looks only at what arrived since its last call plus OVERLAP
    characters before it, and ``line`` only for a newline after what it
    scanned already, so each character is examined a bounded number of times.
    """

    def __init__(self) -> None:
        self.text = ""
        self.pos = 0  # line() consumed text[:pos]
        self.scanned = 0  # text[pos:scanned] holds no newline
        self.searched = 0  # search() looked at text[:searched]

    def append(self, data: str) -> None:
        if self.pos and self.pos * 2 >= len(self.text):
            self._compact()
        self.text += data

    def _compact(self) -> None:
        """Drop what line() consumed: a search then starts at the first unread character (for ``^``)."""
        if self.pos:
            self.text = self.text[self.pos:]
            self.scanned -= self.pos
            self.searched = max(0, self.searched - self.pos)
            self.pos = 0

    def begin_search(self) -> None:
        """A new wait: what is buffered is searched once more, whole (it is at most 2 * MAX_LINE)."""
        self._compact()
        self.searched = 0

    def search(self, compiled: Sequence[re.Pattern[str]]) -> tuple[int, re.Match[str], str] | None:
        """(index, match, what came before it) of the earliest match, the first pattern on a tie; consumed."""
        self._compact()
        start = max(0, self.searched - OVERLAP)
        best: re.Match[str] | None = None
        index = -1
        for number, pattern in enumerate(compiled):
            found = pattern.search(self.text, start)
            if found and (best is None or found.start() < best.start()):
                best, index = found, number
        if best is not None:
            before = self.text[max(0, best.start() - MAX_LINE):best.start()]
            self.text = self.text[best.end():]
            self.scanned = self.searched = 0
            return index, best, before
        if len(self.text) > 2 * MAX_LINE:  # nothing matched: keep the tail (the log has it all)
            self.text = self.text[-MAX_LINE:]
            self.scanned = 0
        self.searched = len(self.text)
        return None

    def line(self) -> str | None:
        """The next line with its newline, or a piece of MAX_LINE characters of a longer one; None: not yet."""
        end = self.text.find("\n", self.scanned)
        if end >= 0 and end + 1 - self.pos <= MAX_LINE:
            line = self.text[self.pos:end + 1]
            self.pos = self.scanned = end + 1
            return line
        if end >= 0 or len(self.text) - self.pos >= MAX_LINE:
            cut = cut_point(self.text, self.pos)
            line = self.text[self.pos:cut]
            self.pos = cut
            self.scanned = end if end >= 0 else len(self.text)  # no newline before it
            return line
        self.scanned = len(self.text)
        return None

    def clear(self) -> None:
        self.text = ""
        self.pos = self.scanned = self.searched = 0


class ConsoleHost(Protocol):
    """What a connection needs of the job it serves (pipeline.context.JobContext is one)."""

    @property
    def logger(self) -> JobLogger: ...

    @property
    def processes(self) -> ProcessRegistry: ...

    def check(self) -> None:
        """Raise if the job was cancelled or a deadline passed."""


class ShellConnection:
    def __init__(self, argv: Sequence[str], ctx: ConsoleHost, what: str, cwd: str | None = None,
                 env: dict[str, str] | None = None, hard_stop: bool = False):
        self.what = what
        # An emulator the job started is powered off by killing it, as a power cut would:
        # its disks are the job's copies, and a graceful exit only makes the job wait.
        self.hard_stop = hard_stop
        self.ctx = ctx
        self.log = TargetLog(ctx.logger.target)
        self.counter = 0
        self.buffer = ConsoleBuffer()
        self._match: re.Match[str] | None = None
        self._before = ""
        try:
            # In the job's cgroup from its first instruction, with the job's token: whatever it
            # starts (a test's background jobs, a daemon) is found again at the job's end.
            self.child = pexpect.spawn(argv[0], list(argv[1:]), cwd=cwd, encoding="utf-8",
                                       codec_errors="replace", timeout=None, maxread=READ_SIZE,
                                       echo=False, dimensions=(500, 2000),
                                       **ctx.processes.spawn_options(env))
        except (pexpect.ExceptionPexpect, OSError) as exc:
            raise InfrastructureError(f"{what}: cannot start {argv[0]}: {exc}") from None
        self.child.delaybeforesend = None  # pexpect would sleep 50 ms before every send
        # We end the process group ourselves in close(): no need for pexpect's pauses.
        self.child.delayafterclose = self.child.ptyproc.delayafterclose = 0
        self.child.delayafterterminate = self.child.ptyproc.delayafterterminate = 0
        self.child.logfile_read = self.log
        # pexpect starts the child in a new session: its pid is its process group.
        ctx.processes.adopt(self.child.pid, what)

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    def alive(self) -> bool:
        return bool(self.child.isalive())

    def send(self, text: str, log: bool = True) -> None:
        if log:
            self.ctx.logger.log("input", text.rstrip("\n"))
        try:
            self.child.send(text)
        except OSError as exc:
            raise InfrastructureError(f"{self.what}: connection lost while sending: {exc}") from None

    def sendline(self, text: str = "", log: bool = True) -> None:
        self.send(text + "\n", log=log)

    def expect(self, patterns: str | Sequence[str], timeout: float, what: str,
               failures: Sequence[tuple[str, Exception]] = ()) -> int:
        """Wait for one of ``patterns`` (regexes); return its index.

        ``failures`` are (regex, exception) pairs: seeing one raises its exception
        at once (a bootloader error, a kernel panic). A timeout raises ActionTimeout
        naming ``what``; cancel and job deadlines interrupt the wait within 0.5 s.
        The earliest match wins (the first pattern on a tie). Each read is searched
        with OVERLAP characters before it, so a long line costs linear time.
        """
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        compiled = [re.compile(p) for p in patterns] + [re.compile(f) for f, _ in failures]
        deadline = time.monotonic() + timeout
        self.buffer.begin_search()
        while True:
            found = self.buffer.search(compiled)
            if found is not None:
                index, self._match, self._before = found
                if index >= len(patterns):
                    self.log.drain()
                    raise failures[index - len(patterns)][1]
                return index
            self._read(deadline, timeout, what)

    def readline(self, timeout: float, what: str) -> str:
        """The next line the board prints, with its newline; a longer line comes in pieces of MAX_LINE."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.buffer.line()
            if line is not None:
                return line
            self._read(deadline, timeout, what)

    def _read(self, deadline: float, timeout: float, what: str) -> None:
        """Add what the board prints next (within POLL) to the buffer; check cancel and deadlines."""
        self.ctx.check()
        left = deadline - time.monotonic()
        if left <= 0:
            self.log.drain()
            raise ActionTimeout(f"{what}: timeout. {timeout:g} seconds")
        try:
            self.buffer.append(self.child.read_nonblocking(READ_SIZE, timeout=min(POLL, left)))
        except pexpect.TIMEOUT:
            return
        except (pexpect.EOF, OSError):
            self.log.drain()
            raise InfrastructureError(f"{self.what}: the connection closed while waiting for {what}") from None

    def discard(self) -> None:
        """Forget what the board printed and no wait consumed (a stale prompt before a power cycle)."""
        self.buffer.clear()
        self.log.drain()

    @property
    def match(self) -> re.Match[str] | None:
        return self._match

    @property
    def before(self) -> str:
        """What came before the last match (its last MAX_LINE characters)."""
        return self._before

    def run(self, command: str, timeout: float, what: str) -> tuple[int, str]:
        """Run a shell command on the target; return (exit status, output).

        The marker is built so that the echo of the command line cannot match it.
        """
        self.counter += 1
        tag = f"LAVA_RC_{self.counter}"
        self.sendline(f"{command}; echo {tag}=$?END")
        self.expect(rf"{tag}=(\d+)END", timeout, what)
        if self._match is None:
            raise Bug(f"{what}: expect returned without a match")
        status = int(self._match.group(1))
        output = ANSI.sub("", self.before)
        return status, output

    def close(self) -> None:
        self.log.drain()
        if self.child.isalive():
            # A hang-up ends interactive shells, which ignore SIGTERM.
            try:
                os.killpg(self.child.pid, signal.SIGKILL if self.hard_stop else signal.SIGHUP)
            except ProcessLookupError:
                pass
            kill_group(self.child.pid, grace=1.0)
        try:
            self.child.close(force=True)
        except (pexpect.ExceptionPexpect, OSError):
            pass
        self.ctx.processes.forget(self.child.pid)
