"""A lab with its server, for the server's end-to-end tests and benchmark: real processes only.

``lab_server()`` starts a private redis-server, real board workers
(``lava-dispatch worker``, local-shell boards), a lab database (SQLite in
the lab's directory unless ``db_url`` is given), three users with API
tokens (alice, bob: users; root: admin) and ``lava-dispatch server`` on a
free port, its archive worker as its child. At the end it stops the server
with SIGTERM and checks that nothing the server started is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab_helpers import ROOT, Lab, descendants_by_env, free_port, running_lab, wait_for

USERS = {"alice": False, "bob": False, "root": True}


@dataclass
class ServerLab:
    lab: Lab
    db_url: str
    port: int
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc_uri(self, user: str | None = "alice") -> str:
        return f"http://{user}:{self.tokens[user]}@127.0.0.1:{self.port}/RPC2" if user else f"{self.url}/RPC2"

    def rpc(self, user: str | None = "alice") -> Any:
        import xmlrpc.client

        return xmlrpc.client.ServerProxy(self.rpc_uri(user), allow_none=True)

    def headers(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Token {self.tokens[user]}"}

    @property
    def marker(self) -> str:
        return self.env["LAVA_DISPATCH_LAB_DIR"]

    def start_server(self, extra_env: dict[str, str] | None = None) -> None:
        import requests

        self.starts += 1
        self.log = self.lab.base / f"server-{self.starts}.log"
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasks.cli", "server", "--listen", f"127.0.0.1:{self.port}",
             "--archive-threads", "2"], cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()[-3000:]}")
            return requests.get(f"{self.url}/api/v0.2/system/version/", timeout=5).status_code == 200
        wait_for(up, 60, "the lab server to answer")
        wait_for(lambda: b"ready." in self.log.read_bytes(), 60, "the server's archive worker to be ready")

    def stop_server(self) -> int:
        """SIGTERM; the exit code. Nothing the server started may outlive it."""
        process, self.process = self.process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError("the server did not stop within 60 s of SIGTERM") from None
        wait_for(lambda: not descendants_by_env("LAVA_DISPATCH_LAB_DIR", self.marker), 30,
                 "every process of the server to end")
        return code

    def redis(self) -> Any:
        return self.lab.r()

    def wait_archived(self, job_id: str, timeout: float = 60) -> None:
        from server.archive import get_job

        wait_for(lambda: get_job(job_id, engine=self.engine()) is not None, timeout, f"job {job_id} archived")

    def engine(self) -> Any:
        from server.db import get_engine

        return get_engine(self.db_url)


@contextlib.contextmanager
def lab_server(prefix: str = "server-test-", boards: tuple[str, ...] = ("loc1",), db_url: str | None = None,
               extra_env: dict[str, str] | None = None) -> Iterator[ServerLab]:
    with running_lab(prefix, extra_env=extra_env) as lab:
        for name in boards:
            lab.start_worker(name, wait=False)
        server_dir = lab.base / "server"
        server_dir.mkdir()
        url = db_url or f"sqlite:///{server_dir / 'lab.sqlite3'}"
        env = {**lab.env, "LAVA_DISPATCH_LAB_DIR": str(server_dir), "LAVA_DISPATCH_DATABASE_URL": url}
        served = ServerLab(lab, url, free_port(), env)
        from server import auth

        for user, admin in USERS.items():
            auth.add_user(user, admin, engine=served.engine())
            served.tokens[user] = auth.add_token(user, "tests", engine=served.engine())
        for name in boards:
            lab.wait_idle(name, 60)
        try:
            served.start_server()
            yield served
            assert served.stop_server() == 0, "the server did not stop cleanly on SIGTERM"
        finally:
            served.stop_server()
            from server.db import dispose_engines

            dispose_engines()


def lavacli(served: ServerLab, *args: str, user: str | None = "alice", timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real lavacli (from PyPI), as a process, against the server."""
    result = subprocess.run(["lavacli", "--uri", served.rpc_uri(user), *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "HOME": str(served.lab.base)})
    if check:
        assert result.returncode == 0, \
            f"lavacli {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


__all__ = ["ServerLab", "lab_server", "lavacli", "USERS"]
