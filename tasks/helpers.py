"""A board's helper processes (QEMU, telnet, the board's shells) and scratch space: where they are
recorded, and how what a dead worker left is removed.

Every helper is started in its own session by the engine's process
registry, which records it in the board's pid file; ``kill_recorded_helpers``
ends those sessions. The supervisor is a child subreaper, so helpers whose
parent died come to it: ``kill_orphans`` ends them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from pipeline.processes import kill_group, kill_stale_groups
from pipeline.termination import terminate
from tasks import config


def pid_file_for(board: str) -> Path:
    return config.state_dir() / f"{board}.pids"


def work_root_for(board: str) -> Path:
    """The board's scratch space: one directory per running job (downloads, overlay, the board's root)."""
    return Path(tempfile.gettempdir()) / f"lava-dispatch-{board}"


def clean_work_root(board: str) -> list[str]:
    """Remove what jobs of a dead worker left in the board's scratch space; the names removed."""
    root = work_root_for(board)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, sid) of a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[2]), int(fields[3])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def kill_sessions(sids: set[int], grace: float = 2.0) -> list[int]:
    """TERM then KILL every process of the given sessions (helpers are session leaders); the pids killed."""
    sids = {s for s in sids if s > 1 and s != os.getsid(0)}
    if not sids:
        return []
    victims = [pid for pid in _all_pids() if (st := _proc_stat(pid)) and st[2] in sids and pid != os.getpid()]

    def send(sig: int) -> None:
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    terminate(send, lambda: any(_proc_stat(pid) for pid in victims), grace, reap=_reap_children)
    return victims


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_recorded_helpers(pid_file: Path) -> list[str]:
    """Kill the helper groups a worker recorded, and everything else in their sessions."""
    sids: set[int] = set()
    if pid_file.exists():
        for line in pid_file.read_text().splitlines():
            text = line.split(" ", 1)[0]
            if text.isdigit():
                sids.add(int(text))
    killed = kill_stale_groups(pid_file)
    extra = kill_sessions(sids)
    if extra and not killed:
        killed = [f"{len(extra)} process(es) of sessions {sorted(sids)}"]
    return killed


def kill_orphans(exclude: frozenset[int] = frozenset()) -> list[int]:
    """Kill the processes the kernel re-parented to this (subreaper) process, with their sessions."""
    me = os.getpid()
    orphans = [pid for pid in _all_pids() if pid not in exclude and (st := _proc_stat(pid)) and st[0] == me]
    sids = set()
    for pid in orphans:
        st = _proc_stat(pid)
        if st:
            sids.add(st[2])
            if st[1] > 1:
                kill_group(st[1], grace=1.0)
    killed = kill_sessions(sids) if sids else []
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap_children()
    return sorted(set(orphans) | set(killed))


__all__ = ["pid_file_for", "work_root_for", "clean_work_root", "kill_sessions", "kill_recorded_helpers",
           "kill_orphans"]
