"""The NFS server the dispatcher manages for NFS roots: nfs-ganesha in userspace.

One server per host, NFSv4 over TCP on 127.0.0.1:2049 by default (QEMU
boards reach it as 10.0.2.2:2049). It exports whole trees, the ``nfs_root``
of each device that asks for a managed server
(``actions.deploy.methods.tftp.parameters.nfs_server: ganesha``); each job
unpacks its root filesystem into its own directory below the tree, so a
running server never needs a new export for a new job. The pseudo path of
an export is its real path: a board mounts ``SERVER:/var/lib/.../nfs/BOARD/JOB``.

The server is started on first use and then left running for the next
jobs; it is only restarted when a tree that it does not export yet is
asked for (an export list cannot change while it runs). ``stop_server()``
or ``python -m pipeline.nfs stop`` ends it. Its files (configuration,
pid file, log, NFSv4 recovery state) live in ``$LAVA_DISPATCH_NFS_STATE``,
by default ``/run/lava-dispatch/nfs-ganesha`` (root) or
``/tmp/lava-dispatch-nfs-UID``. Nothing here imports Celery or Redis.

A lab whose NFS server is managed by its administrators (kernel nfsd with
``/etc/exports``) leaves ``nfs_server`` out of the device configuration.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError, InfrastructureError
from pipeline.termination import terminate

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 2049
START_TIMEOUT = 30.0

CONFIG = """\
# Written by lava-dispatch (pipeline/nfs.py): the NFS server of the boards' NFS roots.
NFS_CORE_PARAM {{
	Protocols = 4;
	Bind_addr = {bind};
	NFS_Port = {port};
	Enable_UDP = false;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}}

NFSV4 {{
	# No grace period after a (re)start: boards mount right away.
	Graceless = true;
	RecoveryBackend = fs;
	RecoveryRoot = "{state}/recovery";
	Only_Numeric_Owners = true;
}}

NFS_KRB5 {{
	Active_krb5 = false;
}}

MDCACHE {{
	# Job directories are created and removed behind the server's back:
	# never answer a lookup from a cached directory listing.
	Dir_Chunk = 0;
}}

EXPORT_DEFAULTS {{
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 4;
	Transports = TCP;
	# QEMU's user network connects from unprivileged host ports.
	PrivilegedPort = false;
	Attr_Expiration_Time = 0;
}}
{exports}
LOG {{
	Default_Log_Level = WARN;
}}
"""

EXPORT = """
EXPORT {{
	Export_Id = {id};
	Path = "{path}";
	Pseudo = "{path}";
	FSAL {{ Name = VFS; }}
}}
"""


def state_dir() -> Path:
    if os.environ.get("LAVA_DISPATCH_NFS_STATE"):
        return Path(os.environ["LAVA_DISPATCH_NFS_STATE"]).absolute()
    if os.geteuid() == 0:
        return Path("/run/lava-dispatch/nfs-ganesha")
    return Path(f"/tmp/lava-dispatch-nfs-{os.getuid()}")


class NfsServer:
    def __init__(self, state: Path | None = None, bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT):
        self.state = state or state_dir()
        self.bind, self.port = bind, port
        self.config = self.state / "ganesha.conf"
        self.pid_file = self.state / "ganesha.pid"
        self.log_file = self.state / "ganesha.log"
        self.exports_file = self.state / "exports.json"

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def pid(self) -> int | None:
        """The server's pid if the server this state directory started runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            return None
        return pid if state != "Z" and str(self.config).encode() in cmdline else None

    def exports(self) -> list[str]:
        try:
            return [str(p) for p in json.loads(self.exports_file.read_text())]
        except (OSError, ValueError):
            return []

    def ensure_export(self, root: Path, log: Callable[[str], None] = lambda message: None) -> None:
        """Make sure the server runs and exports the tree ``root`` (its subdirectories included)."""
        if shutil.which("ganesha.nfsd") is None:
            raise InfrastructureError("nfs-ganesha is not installed (ganesha.nfsd not found): "
                                      "apt-get install nfs-ganesha nfs-ganesha-vfs")
        root = root.resolve()
        if any(c in str(root) for c in '"\n\\'):
            raise ConfigurationError(f"nfs_root {str(root)!r} cannot be written into an export")
        root.mkdir(parents=True, exist_ok=True)
        with self.lock():
            exports = [e for e in self.exports() if Path(e).is_dir()]
            covered = any(root == Path(e) or Path(e) in root.parents for e in exports)
            pid = self.pid()
            if covered and pid is not None:
                return
            if not covered:
                # A new tree replaces the trees inside it.
                exports = [e for e in exports if root not in Path(e).parents] + [str(root)]
            if pid is not None:
                log(f"nfs-ganesha: restarting to export {root} as well")
                self._stop(pid)
            self._start(exports, log)

    def _start(self, exports: list[str], log: Callable[[str], None]) -> None:
        if _port_open(self.bind, self.port):
            raise InfrastructureError(f"another server listens on {self.bind}:{self.port}: stop it (kernel nfsd? "
                                      "another nfs-ganesha?) or let the lab manage the NFS server itself")
        (self.state / "recovery").mkdir(parents=True, exist_ok=True)
        blocks = "".join(EXPORT.format(id=index, path=path) for index, path in enumerate(sorted(exports), 1))
        self.config.write_text(CONFIG.format(bind=self.bind, port=self.port, state=self.state, exports=blocks))
        self.exports_file.write_text(json.dumps(sorted(exports)))
        self.pid_file.unlink(missing_ok=True)
        argv = ["ganesha.nfsd", "-F", "-f", str(self.config), "-L", str(self.log_file), "-p", str(self.pid_file)]
        # Its own session, outside the job's process groups: the server outlives the job.
        with open(self.log_file, "ab") as errors:
            process = subprocess.Popen(argv, cwd=self.state, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=errors, start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(self.bind, self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise InfrastructureError(f"nfs-ganesha did not start on {self.bind}:{self.port}: {' | '.join(tail)}")
            time.sleep(0.05)
        log(f"nfs-ganesha (pid {process.pid}) serves {', '.join(sorted(exports))} on {self.bind}:{self.port}")

    def stop(self) -> bool:
        """Stop the server; True if it was running."""
        with self.lock():
            pid = self.pid()
            if pid is None:
                return False
            self._stop(pid)
            return True

    def _stop(self, pid: int) -> None:
        if not terminate(lambda sig: os.kill(pid, sig), lambda: self.pid() is not None, grace=10, kill_wait=5,
                         reap=lambda: _reap(pid)):
            raise InfrastructureError(f"nfs-ganesha (pid {pid}) did not end after SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        # The port is free once the listening socket is closed.
        deadline = time.monotonic() + 5
        while _port_open(self.bind, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def server_for(parameters: dict[str, Any]) -> NfsServer | None:
    """The managed server a device's tftp deploy parameters ask for, or None (the lab runs its own)."""
    kind = parameters.get("nfs_server")
    if kind in (None, "", "external"):
        return None
    if kind != "ganesha":
        raise ConfigurationError(f"nfs_server: {kind!r} is not ganesha or external")
    return NfsServer(bind=str(parameters.get("nfs_bind", DEFAULT_BIND)),
                     port=int(parameters.get("nfs_port", DEFAULT_PORT)))


def stop_server() -> bool:
    return NfsServer().stop()


def main(argv: list[str]) -> int:
    usage = "usage: python -m pipeline.nfs status | stop | start NFS_ROOT"
    if not argv or argv[0] not in ("status", "stop", "start") or (argv[0] == "start") != (len(argv) == 2):
        print(usage, file=sys.stderr)
        return 2
    server = NfsServer()
    if argv[0] == "status":
        pid = server.pid()
        print(f"running (pid {pid}): {', '.join(server.exports())}" if pid else "stopped")
    elif argv[0] == "stop":
        print("stopped" if server.stop() else "not running")
    else:
        server.ensure_export(Path(argv[1]), log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
