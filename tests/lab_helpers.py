"""Helpers for the lab tests and the benchmark: a private redis-server, board workers, waiting on conditions.

Every wait is a condition checked until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.termination import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DEVICE = ROOT / "sample_jobs" / "devices" / "local01.yaml"
KVM_DEVICE = ROOT / "sample_jobs" / "devices" / "kvm01.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Return condition()'s first truthy value; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - e.g. Redis restarting
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


def make_certs(base: Path, client: bool = False) -> Path:
    """A CA, a server certificate for 127.0.0.1 and (``client``) a client certificate, in ``base/certs``.

    Files: ``ca.pem``, ``server.pem``/``server.key``, ``client.pem``/``client.key``.
    """
    certs = base / "certs"
    certs.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=lava-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "ext.cnf")
    if client:
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj",
            "/CN=lava-test-client")
        (certs / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
        ssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "client.pem", "-days", "2", "-extfile", "client.cnf")
    return certs


class RedisServer:
    """A redis-server of our own on a free port: AOF on, in a temp dir; restartable."""

    def __init__(self, directory: Path, password: str | None = None, tls: dict[str, str] | None = None,
                 extra: list[str] | None = None, acl_user: str | None = None):
        self.dir = directory
        self.port = free_port()
        self.password = password
        self.acl_user = acl_user  # with password: an ACL user as docs/lab.md suggests; the default user is off
        self.tls = tls
        self.extra = extra or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f"{self.acl_user or ''}:{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--maxmemory-policy", "noeviction",
                "--logfile", str(self.dir / "redis.log")]
        if self.tls:
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls["cert"],
                     "--tls-key-file", self.tls["key"], "--tls-ca-cert-file", self.tls["ca"],
                     "--tls-auth-clients", self.tls.get("auth_clients", "no")]
        else:
            argv += ["--port", str(self.port)]
        if self.password and self.acl_user:
            argv += ["--user", "default", "off", "--user", self.acl_user, "on", f">{self.password}", "~*", "&*",
                     "+@all", "-@admin", "-@dangerous", "+info"]
        elif self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def client(self):
        from tasks.config import redis_client

        return redis_client(self.url, socket_timeout=5, retry=None)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # noqa: BLE001
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the AOF is complete)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Lab:
    """A lab on a private Redis: board workers started with ``lava-dispatch worker``."""

    def __init__(self, redis: RedisServer, base: Path, lease: float = 15.0, extra_env: dict[str, str] | None = None):
        self.redis = redis
        self.base = base
        self.workers: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.env = dict(os.environ)
        self.env.update({"LAVA_DISPATCH_REDIS_URL": redis.url, "LAVA_DISPATCH_OUTPUT_ROOT": str(base / "jobs"),
                         "LAVA_DISPATCH_STATE_DIR": str(base / "state"), "LAVA_DISPATCH_LEASE_SECONDS": str(lease),
                         "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        # The workers' scratch space (TMPDIR) is inside the lab's directory, removed with it.
        (base / "tmp").mkdir(exist_ok=True)
        self.env["TMPDIR"] = str(base / "tmp")
        # A lab worker reads no host file unless told: the tests' jobs take the board images by file://.
        self.env.setdefault("LAVA_DISPATCH_FILE_ROOTS", os.environ.get("LAVA_DISPATCH_IMAGES")
                            or str(Path.home() / ".cache" / "lava-dispatch" / "images"))
        self.env.update(extra_env or {})

    def apply_env(self) -> None:
        """Make this process (the test) talk to the lab's Redis."""
        for key in ("LAVA_DISPATCH_REDIS_URL", "LAVA_DISPATCH_OUTPUT_ROOT", "LAVA_DISPATCH_STATE_DIR",
                    "LAVA_DISPATCH_LEASE_SECONDS", "LAVA_DISPATCH_REDIS_CA"):
            if key in self.env:
                os.environ[key] = self.env[key]

    def start_worker(self, name: str, device: Path = LOCAL_DEVICE, wait: bool = True) -> subprocess.Popen:
        log = self.base / f"worker-{name}.log"
        self.logs[name] = log
        handle = open(log, "ab")
        process = subprocess.Popen([sys.executable, "-m", "tasks.cli", "worker", "--device", str(device),
                                    "--name", name, "--loglevel", "INFO"], cwd=ROOT, env=self.env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[name] = process
        if wait:
            self.wait_idle(name, 60)
        return process

    def r(self):
        return self.redis.client()

    def board(self, name: str) -> dict[str, str]:
        from tasks.keys import board_key

        return self.r().hgetall(board_key(name))

    def wait_idle(self, name: str, timeout: float = 30) -> None:
        from tasks.keys import board_key, type_keys

        def idle() -> bool:
            r = self.r()
            board = r.hgetall(board_key(name))
            if not board or board.get("job") or board.get("stopped") == "1":
                return False
            if self.workers.get(name) is not None and self.workers[name].poll() is not None:
                raise AssertionError(f"worker {name} exited: {self.logs[name].read_text()[-3000:]}")
            return r.zscore(type_keys(board["device_type"]).idle, name) is not None and self.consuming(name)
        wait_for(idle, timeout, f"board {name} idle")

    def consuming(self, name: str) -> bool:
        """The Celery worker of the board has started consuming (its log says it is ready)."""
        log = self.logs.get(name)
        return log is None or b"ready." in log.read_bytes()

    def child_pid(self, name: str) -> int:
        return int(self.board(name)["pid"])

    def stop_worker(self, name: str, timeout: float = 60) -> None:
        process = self.workers.pop(name, None)
        if process is None or process.poll() is not None:
            return
        stop_process_group(process, timeout)

    def stop_all(self) -> None:
        for name in list(self.workers):
            process = self.workers[name]
            if process.poll() is None:
                process.terminate()
        for name in list(self.workers):
            self.stop_worker(name)
        # Nothing of ours may survive: supervisors, workers, helpers (each started in its own session).
        for pid in descendants_by_env("LAVA_DISPATCH_STATE_DIR", str(self.base / "state")):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def descendants_by_env(key: str, value: str) -> list[int]:
    """Processes whose environment has key=value (how the tests find what a lab started)."""
    needle = f"{key}={value}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return found


def processes_mentioning(job_id: str, base: Path | None = None) -> list[tuple[int, str]]:
    """Live processes of job ``job_id`` of a lab: its helpers.

    Job ids are small integers that every lab (and another test run on the
    same machine) reuses, so a helper is recognised by the job's scratch
    directory of this lab, ``<base>/tmp/lava-dispatch-<board>/<job id>``, in
    its command line or environment (``base``: the lab in this process's
    environment).
    """
    import re

    if base is None:
        base = Path(os.environ["LAVA_DISPATCH_STATE_DIR"]).parent
    pattern = re.compile(re.escape(str(base / "tmp").encode()) + rb"/lava-dispatch-[^/\0]+/"
                         + re.escape(job_id.encode()) + rb"(?=[/\0 ]|$)")
    return live_processes(lambda cmdline, environ: bool(pattern.search(cmdline) or pattern.search(environ)))


def live_processes(match: Callable[[bytes, bytes], bool]) -> list[tuple[int, str]]:
    """(pid, command line) of every live process but this one whose command line and environment ``match``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            environ = Path(f"/proc/{name}/environ").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z" and match(cmdline, environ):
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def local_job(name: str = "lab-job", steps: list[str] | None = None, timeout_s: int = 120,
              priority: str | int | None = None, tags: list[str] | None = None, device_type: str = "local-shell") -> str:
    """A local-shell job whose test runs ``steps`` (default: one passing case)."""
    import yaml

    steps = steps or ["lava-test-case quick --shell true"]
    job: dict[str, Any] = {
        "device_type": device_type, "job_name": name,
        "timeouts": {"job": {"seconds": timeout_s}, "action": {"seconds": timeout_s}},
        "actions": [
            {"boot": {"method": "minimal"}},
            {"test": {"definitions": [{"repository": {"metadata": {"format": "Lava-Test Test Definition 1.0",
                                                                   "name": "lab"},
                                                      "run": {"steps": steps}},
                                       "from": "inline", "name": "lab", "path": "inline/lab.yaml"}]}},
        ],
    }
    if priority is not None:
        job["priority"] = priority
    if tags:
        job["tags"] = tags
    return yaml.safe_dump(job, sort_keys=False)


def make_tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_lab(prefix: str = "lab-test-", lease: float = 15.0, extra_env: dict[str, str] | None = None,
                **redis_options: Any) -> Iterator[Lab]:
    """A private redis-server and a Lab around it; this process talks to it while inside.

    Everything the lab started is stopped at the end, and the environment restored.
    """
    base = make_tempdir(prefix)
    server = RedisServer(base, **redis_options).start()
    lab = Lab(server, base, lease=lease, extra_env=extra_env)
    saved = {key: os.environ.get(key) for key in lab.env if key.startswith("LAVA_DISPATCH_")}
    lab.apply_env()
    for key, value in (extra_env or {}).items():
        if key.startswith("LAVA_DISPATCH_"):
            os.environ[key] = value
    try:
        yield lab
    finally:
        lab.stop_all()
        server.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        remove_tree(base)
