"""Helper processes (QEMU, git, telnet, power commands) and how they end.

Every helper starts in its own session, so ``os.killpg`` ends it and
everything it started: no orphan survives a cancel, a timeout or a crash.
The registry also writes each live helper's process group to a file, so a
restarted worker can kill what a crashed one left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from pipeline.errors import InfrastructureError


class ProcessRegistry:
    """The helper process groups of one job (or one board)."""

    def __init__(self, pid_file: Path | None = None):
        self.groups: dict[int, str] = {}  # pgid -> what it is
        self.pid_file = pid_file

    def spawn(self, argv: Sequence[str], what: str, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self.adopt(process.pid, what)
        return process

    def adopt(self, pgid: int, what: str) -> None:
        self.groups[pgid] = what
        self._save()

    def forget(self, pgid: int) -> None:
        self.groups.pop(pgid, None)
        self._save()

    def kill_all(self, grace: float = 2.0, log: Callable[[str], None] | None = None) -> None:
        for pgid, what in list(self.groups.items()):
            if kill_group(pgid, grace) and log:
                log(f"stopped {what} (process group {pgid})")
            self.forget(pgid)

    def _save(self) -> None:
        if self.pid_file is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{pgid} {what}\n" for pgid, what in self.groups.items()))
        tmp.replace(self.pid_file)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(pgid: int, grace: float = 2.0) -> bool:
    """TERM then KILL a process group; True if it was alive."""
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    pause = 0.001  # most helpers end within milliseconds: look often at first
    while time.monotonic() < deadline and group_alive(pgid):
        _reap(pgid)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pgid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_stale_groups(pid_file: Path) -> list[str]:
    """Kill the process groups a crashed worker recorded; return what was killed."""
    killed = []
    if not pid_file.exists():
        return killed
    for line in pid_file.read_text().splitlines():
        pgid_text, _, what = line.partition(" ")
        if pgid_text.isdigit() and kill_group(int(pgid_text)):
            killed.append(f"{what} (process group {pgid_text})")
    pid_file.unlink(missing_ok=True)
    return killed


def run_command(argv: Sequence[str], timeout: float, what: str, cwd: Path | None = None,
                env: dict[str, str] | None = None, registry: ProcessRegistry | None = None,
                input_bytes: bytes | None = None) -> str:
    """Run a helper to completion within ``timeout``; return its output.

    A failure or a timeout raises InfrastructureError carrying the output's tail.
    """
    process = subprocess.Popen(list(argv), cwd=cwd, env=env, start_new_session=True,
                               stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if registry:
        registry.adopt(process.pid, what)
    try:
        output, _ = process.communicate(input_bytes, timeout=max(timeout, 0.01))
    except subprocess.TimeoutExpired:
        kill_group(process.pid, grace=0.5)
        process.communicate()
        raise InfrastructureError(f"{what}: no answer within {timeout:.0f} s") from None
    except BaseException:
        kill_group(process.pid, grace=0.5)
        raise
    finally:
        if registry:
            registry.forget(process.pid)
    text = output.decode(errors="replace")
    if process.returncode != 0:
        tail = text.strip().splitlines()[-3:]
        raise InfrastructureError(f"{what} failed (exit {process.returncode}): {' | '.join(tail)}")
    return text
