"""Helper processes (QEMU, git, telnet, power commands) and how they end.

Every helper starts in its own session, so ``os.killpg`` ends it and what
stays in its group; what a job detached from its helpers (background jobs
of a shell, ``setsid``, daemons) is ended with the job's cgroup or token
(``pipeline.jobscope``). The registry also writes each live helper's
process group, the job's cgroup and token to a file, so a restarted worker
can kill what a crashed one left behind. ``terminate`` is the one
TERM-grace-KILL loop of the project (pipeline.termination).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InfrastructureError
from pipeline.jobscope import JobScope, stop_cgroup, stop_token
from pipeline.termination import terminate


class ProcessRegistry:
    """The helper process groups of one job (or one board), and everything the job started."""

    def __init__(self, pid_file: Path | None = None):
        self.groups: dict[int, str] = {}  # pgid -> what it is
        self.pid_file = pid_file
        self.scope = JobScope()

    def spawn_options(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        """``env`` and ``preexec_fn`` for a new helper of this job (Popen and pexpect take both)."""
        return {"env": self.scope.environ(env), "preexec_fn": self.scope.preexec()}

    def adopt(self, pgid: int, what: str) -> None:
        self.groups[pgid] = what
        self.scope.note_session(pgid)
        self._save()

    def forget(self, pgid: int) -> None:
        self.groups.pop(pgid, None)
        self._save()

    def kill_all(self, grace: float = 2.0, log: Callable[[str], None] | None = None) -> list[str]:
        """Stop every helper, then whatever the job left running; the latter as "command (pid N)"."""
        for pgid, what in list(self.groups.items()):
            if kill_group(pgid, grace) and log:
                log(f"stopped {what} (process group {pgid})")
            self.forget(pgid)
        left = self.scope.stop(grace)
        self._save()
        return left

    def _save(self) -> None:
        if self.pid_file is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        lines = [f"{pgid} {what}" for pgid, what in self.groups.items()]
        if self.scope.used:
            lines += self.scope.records()
        tmp.write_text("".join(f"{line}\n" for line in lines))
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
    terminate(lambda sig: os.killpg(pgid, sig), lambda: group_alive(pgid), grace, reap=lambda: _reap(pgid))
    _reap(pgid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_stale_groups(pid_file: Path) -> list[str]:
    """Kill the process groups, the job's cgroup and token processes a crashed worker recorded;
    return what was killed."""
    killed: list[str] = []
    if not pid_file.exists():
        return killed
    for line in pid_file.read_text().splitlines():
        pgid_text, _, what = line.partition(" ")
        if pgid_text.isdigit() and kill_group(int(pgid_text)):
            killed.append(f"{what} (process group {pgid_text})")
        elif pgid_text == "cgroup" and what:
            killed += [f"{command} (pid {pid})" for pid, command in stop_cgroup(Path(what)).items()]
        elif pgid_text == "token" and what:
            killed += [f"{command} (pid {pid})" for pid, command in stop_token(what).items()]
    pid_file.unlink(missing_ok=True)
    return killed


def run_command(argv: Sequence[str], timeout: float, what: str, cwd: Path | None = None,
                env: dict[str, str] | None = None, registry: ProcessRegistry | None = None,
                input_bytes: bytes | None = None) -> str:
    """Run a helper to completion within ``timeout``; return its output.

    A failure or a timeout raises InfrastructureError carrying the output's tail.
    """
    options: dict[str, Any] = registry.spawn_options(env) if registry else {"env": env}
    process = subprocess.Popen(list(argv), cwd=cwd, start_new_session=True,
                               stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **options)
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
    text: str = output.decode(errors="replace")
    if process.returncode != 0:
        tail = text.strip().splitlines()[-3:]
        raise InfrastructureError(f"{what} failed (exit {process.returncode}): {' | '.join(tail)}")
    return text
