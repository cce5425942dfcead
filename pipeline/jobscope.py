"""Every process a job started on this host, found and ended when the job ends.

A test on a local-shell board may leave processes running: ``cmd &``,
``nohup cmd &``, ``setsid cmd &``, a daemon that forks twice. An interactive
shell gives each of them its own process group, ``setsid`` its own session,
and a double fork hands the daemon to init: killing the helper's process
group (what ``ProcessRegistry`` does) misses them all. So:

- each helper a job spawns (its console or connect command, power commands,
  QEMU, git) joins the job's own **cgroup** (v2) in the forked child, before
  it execs: nothing it ever forks can be outside. At the end the cgroup is
  frozen (so nothing forks while it is listed), its processes get SIGTERM,
  and after a short grace ``cgroup.kill``; then the cgroup is removed.
  Job cgroups are children of the dispatcher's own cgroup, or of
  ``LAVA_DISPATCH_CGROUP`` (a writable cgroup v2 directory);
  ``LAVA_DISPATCH_CGROUP=off`` never uses one.
- each helper also carries the job's token (``LAVA_DISPATCH_JOB_TOKEN``) in
  its environment, and the board's shell exports it, so whatever the tests
  start inherits it. Without a writable cgroup (not root, no delegation) the
  job's processes are those whose environment holds the token, those of its
  helpers' sessions, and their descendants, from /proc. That scan also runs
  after the cgroup's end, for anything that was never in it.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pipeline.termination import terminate, wait_until

TOKEN_VARIABLE = "LAVA_DISPATCH_JOB_TOKEN"
CGROUP_SETTING = "LAVA_DISPATCH_CGROUP"
CGROUP_PREFIX = "lava-dispatch-job-"
FREEZE_WAIT = 1.0  # seconds for a cgroup to report frozen (a process in the kernel may delay it)


# ---------------------------------------------------------------- /proc


def proc_stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, ppid, pgid, sid, start time) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


def live(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def command_line(pid: int, limit: int = 60) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            text = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text[:limit] + "...") if len(text) > limit else (text or "?")


def _has_token(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:
        return False


def _protected() -> set[int]:
    """This process and its ancestors: never a victim, even if they carry a token."""
    pids, pid = {0, 1}, os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        stat = proc_stat(pid)
        pid = stat[1] if stat else 0
    return pids


def job_processes(token: str | None, sessions: Mapping[int, int] = {}) -> list[int]:
    """Live processes of a job: its token in their environment, or in one of its helpers' sessions
    (``sessions``: sid -> the leader's start time, so a recycled session id is not taken for ours),
    and their descendants."""
    needle = f"{TOKEN_VARIABLE}={token}".encode() if token else None
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := proc_stat(int(name))) and stat[0] not in ("Z", "X"):
            stats[int(name)] = stat
    # While a session has members its id cannot be reused; a live leader must be the one we started.
    ours = {sid for sid, started in sessions.items() if sid not in stats or stats[sid][4] == started}
    protected = _protected()
    found = {pid for pid, stat in stats.items() if pid not in protected
             and (stat[3] in ours or (needle is not None and _has_token(pid, needle)))}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat[1], []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in protected:
                found.add(child)
                todo.append(child)
    return sorted(found)


# ---------------------------------------------------------------- cgroup v2


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` on a hybrid host)."""
    try:
        with open("/proc/self/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1].replace("\\040", " "))
    except OSError:
        pass
    return None


def cgroup_base() -> Path | None:
    """Where job cgroups are created, or None when this host (or the setting) gives none."""
    setting = os.environ.get(CGROUP_SETTING, "").strip()
    if setting == "off":
        return None
    if setting and setting != "auto":
        base = Path(setting)
    else:
        mount = cgroup2_mount()
        try:
            own = next(line[3:].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                       if line.startswith("0::"))
        except (OSError, StopIteration):
            return None
        if mount is None:
            return None
        base = mount / own.lstrip("/")
    if (base / "cgroup.procs").is_file() and os.access(base, os.W_OK):
        return base
    return None


def _in_cgroup(pid: int, cgroup: Path) -> bool:
    """``pid`` is in ``cgroup`` (or below it); False if that cannot be read (the helper has ended)."""
    mount = cgroup2_mount()
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            path = next(line[3:].strip() for line in handle if line.startswith("0::"))
    except (OSError, StopIteration):
        return False
    return mount is not None and (mount / path.lstrip("/") == cgroup or cgroup in (mount / path.lstrip("/")).parents)


def _members(cgroup: Path) -> list[int]:
    pids = []
    for procs in cgroup.glob("**/cgroup.procs"):  # a job may have made cgroups of its own inside
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except (OSError, ValueError):
            pass
    return sorted(set(pids))


def _events(cgroup: Path) -> dict[str, str]:
    try:
        return dict(line.split(" ", 1) for line in (cgroup / "cgroup.events").read_text().splitlines())
    except (OSError, ValueError):
        return {}


def _populated(cgroup: Path) -> bool:
    events = _events(cgroup)
    if events:
        return events.get("populated", "0").strip() == "1"
    return bool(_members(cgroup))


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _freeze(cgroup: Path, frozen: bool) -> None:
    if _write(cgroup / "cgroup.freeze", "1" if frozen else "0") and frozen:
        wait_until(lambda: _events(cgroup).get("frozen", "1").strip() == "1" or not _populated(cgroup),
                   FREEZE_WAIT)


def _remove(cgroup: Path) -> bool:
    """Remove a cgroup and the cgroups a job made inside it (deepest first)."""
    for child in sorted((p for p in cgroup.glob("**") if p != cgroup), key=lambda p: -len(p.parts)):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        cgroup.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def stop_cgroup(cgroup: Path, grace: float = 2.0) -> dict[int, str]:
    """End every process of a job's cgroup (TERM, ``grace``, KILL) and remove it; pid -> command line."""
    ended: dict[int, str] = {}
    if not cgroup.is_dir():
        return ended

    def send(sig: int) -> None:
        if sig == signal.SIGKILL and _write(cgroup / "cgroup.kill", "1"):
            return
        _freeze(cgroup, True)  # a process that forks in a loop cannot outrun the listing
        try:
            for pid in _members(cgroup):
                ended.setdefault(pid, command_line(pid))
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            _freeze(cgroup, False)  # a frozen process would never act on its SIGTERM

    if _populated(cgroup):
        for pid in _members(cgroup):
            ended.setdefault(pid, command_line(pid))
        terminate(send, lambda: _populated(cgroup), grace, reap=lambda: _reap_children(ended))
    _reap_children(ended)
    _remove(cgroup)
    return ended


def _reap_children(pids: Iterable[int]) -> None:
    """Collect the exit status of those that are our own children (else they stay zombies)."""
    me = os.getpid()
    for pid in list(pids):
        stat = proc_stat(pid)
        if stat is not None and stat[0] == "Z" and stat[1] == me:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def stop_token(token: str | None, sessions: Mapping[int, int] = {}, grace: float = 2.0) -> dict[int, str]:
    """End the processes ``job_processes`` finds (TERM, ``grace``, KILL); pid -> command line."""
    ended: dict[int, str] = {}

    def send(sig: int) -> None:
        for pid in job_processes(token, sessions):
            ended.setdefault(pid, command_line(pid))
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def alive() -> bool:
        # A process that forks and exits between the listing of /proc and the reading of its
        # entry hides its child from one scan: only two empty scans in a row mean none is left.
        return bool(job_processes(token, sessions)) or bool(job_processes(token, sessions))

    if alive():
        terminate(send, alive, grace, reap=lambda: _reap_children(ended))
    _reap_children(ended)
    return ended


# ---------------------------------------------------------------- one job


class JobScope:
    """The processes of one job: its cgroup (made at its first spawn), token and helper sessions."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(12)
        self.sessions: dict[int, int] = {}  # sid -> start time of its leader
        self.cgroup: Path | None = None
        self._procs: bytes | None = None
        self._checked = False
        self.used = False  # a helper was spawned since the last stop: there may be something to end
        self.outside = False  # a helper may not be in the cgroup: /proc must be searched as well

    def environ(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a new helper: ``env`` (default: ours) plus the job's token."""
        self.used = True
        return {**(os.environ if env is None else env), TOKEN_VARIABLE: self.token}

    def preexec(self) -> Callable[[], None] | None:
        """What a new helper runs after fork, before exec, to join the job's cgroup (None: no cgroup)."""
        if not self._checked:
            self._checked = True
            base = cgroup_base()
            if base is not None:
                path = base / f"{CGROUP_PREFIX}{os.getpid()}-{self.token[:8]}"
                try:
                    path.mkdir()
                    made = True
                except OSError:
                    made = False
                if made and os.access(path / "cgroup.procs", os.W_OK):
                    self.cgroup, self._procs = path, os.fsencode(path / "cgroup.procs")
        procs = self._procs
        if procs is None:
            return None

        def join() -> None:
            # Only system calls here: the parent may have threads (the child has just one).
            try:
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, b"0")  # 0: the writing process itself
                finally:
                    os.close(fd)
            except OSError:
                pass  # the token and the session still find what this helper starts

        return join

    def note_session(self, sid: int) -> None:
        """A helper was spawned (it leads session ``sid``): remember it, and whether it is in the cgroup."""
        stat = proc_stat(sid)
        if stat is not None:
            self.sessions[sid] = stat[4]
        if self.cgroup is not None and not self.outside and not _in_cgroup(sid, self.cgroup):
            self.outside = True

    def records(self) -> list[str]:
        """Lines for the worker's pid file: what a restarted worker must kill if this one crashes."""
        lines = [f"token {self.token}"]
        if self.cgroup is not None:
            lines.append(f"cgroup {self.cgroup}")
        return lines

    def stop(self, grace: float = 2.0) -> list[str]:
        """End every process of the job still running; each as "command line (pid N)"."""
        ended: dict[int, str] = {}
        search = self.cgroup is None or self.outside
        if self.cgroup is not None:
            ended.update(stop_cgroup(self.cgroup, grace))
            self.cgroup = self._procs = None
            self._checked = False
        if search and self.used:
            ended.update(stop_token(self.token, self.sessions, grace))
        self.sessions.clear()
        self.used = self.outside = False
        return [f"{what} (pid {pid})" for pid, what in sorted(ended.items())]
