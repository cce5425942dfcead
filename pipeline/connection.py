"""A shell connection to a board: a pexpect session over whatever reaches its console.

That is QEMU's serial console on stdio, ``telnet`` to a ser2net port,
``socat`` to a socket, or a local ``sh``. Every wait is bounded by a
timeout, checks the job's cancel flag and deadlines at least every 0.5 s,
and logs what the board printed, one ``target`` line at a time.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import TYPE_CHECKING, Callable, Sequence

import pexpect

from pipeline.action import ActionTimeout
from pipeline.errors import InfrastructureError
from pipeline.processes import kill_group

if TYPE_CHECKING:
    from pipeline.context import JobContext

# Terminal control sequences (busybox ash asks for the cursor position after each prompt).
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
POLL = 0.5


class TargetLog:
    """Turns the console byte stream into ``target`` log lines."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.buffer = ""

    def write(self, data: str) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            clean = ANSI.sub("", line)
            if clean.strip():
                self.emit(clean)

    def flush(self) -> None:
        """pexpect flushes after every read: keep a partial line until its end arrives."""

    def drain(self) -> None:
        """Log a partial line now (a prompt, the last words before a timeout)."""
        if self.buffer.strip():
            clean = ANSI.sub("", self.buffer)
            if clean.strip():
                self.emit(clean)
        self.buffer = ""


class ShellConnection:
    def __init__(self, argv: Sequence[str], ctx: JobContext, what: str, cwd: str | None = None,
                 env: dict[str, str] | None = None, hard_stop: bool = False):
        self.what = what
        # An emulator the job started is powered off by killing it, as a power cut would:
        # its disks are the job's copies, and a graceful exit only makes the job wait.
        self.hard_stop = hard_stop
        self.ctx = ctx
        self.log = TargetLog(ctx.logger.target)
        self.counter = 0
        try:
            # In the job's cgroup from its first instruction, with the job's token: whatever it
            # starts (a test's background jobs, a daemon) is found again at the job's end.
            self.child = pexpect.spawn(argv[0], list(argv[1:]), cwd=cwd, encoding="utf-8",
                                       codec_errors="replace", timeout=None, maxread=65536,
                                       searchwindowsize=None, echo=False, dimensions=(500, 2000),
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
        return self.child.pid

    def alive(self) -> bool:
        return self.child.isalive()

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
        """
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        compiled = [re.compile(p) for p in patterns] + [re.compile(f) for f, _ in failures]
        deadline = time.monotonic() + timeout
        while True:
            self.ctx.check()
            left = deadline - time.monotonic()
            if left <= 0:
                self.log.drain()
                raise ActionTimeout(f"{what}: timeout. {timeout:g} seconds")
            try:
                index = self.child.expect(compiled, timeout=min(POLL, left))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                self.log.drain()
                raise InfrastructureError(f"{self.what}: the connection closed while waiting for {what}") from None
            if index >= len(patterns):
                self.log.drain()
                raise failures[index - len(patterns)][1]
            return index

    @property
    def match(self) -> re.Match | None:
        return self.child.match

    @property
    def before(self) -> str:
        return self.child.before or ""

    def run(self, command: str, timeout: float, what: str) -> tuple[int, str]:
        """Run a shell command on the target; return (exit status, output).

        The marker is built so that the echo of the command line cannot match it.
        """
        self.counter += 1
        tag = f"LAVA_RC_{self.counter}"
        self.sendline(f"{command}; echo {tag}=$?END")
        self.expect(rf"{tag}=(\d+)END", timeout, what)
        status = int(self.match.group(1))
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
