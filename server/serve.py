"""``lava-dispatch server [--listen HOST:PORT]``: the lab's HTTP face, in the foreground, with its archiver.

It serves ``server.app`` with uvicorn and starts, as its own children, what
archiving and notifications need: a Celery worker consuming the
``archive`` queue (``server.worker``), restarted if it dies, and a thread
relaying ended jobs to it (``server.archiver.Relay``). SIGTERM or Ctrl-C
stops all of it: uvicorn finishes the requests under way, the relay stops,
the archive worker gets a warm shutdown (killed if it is still there after
30 s). The child dies with the server even if the server is killed
(``PR_SET_PDEATHSIG``). Several servers may serve one lab (each with its
archive worker, on different addresses or hosts); archiving is idempotent.

Exit codes: 0 stopped, 2 usage, 4 Redis or the database unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.termination import stop_process_group

log = logging.getLogger("lava-dispatch.server")
ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8000)")
    return host.strip("[]") or "127.0.0.1", int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lava-dispatch server",
                                description="Serve the lab's XML-RPC (/RPC2) and REST (/api/v0.2/) APIs and "
                                            "archive its finished jobs")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8000), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8000)")
    p.add_argument("--archive-threads", type=int, default=4, metavar="N",
                   help="threads of the archive worker (archiving, notify callbacks; default 4)")
    p.add_argument("--loglevel", default="INFO", help="DEBUG, INFO, WARNING")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


class ArchiveWorker:
    """The child Celery worker of the ``archive`` queue, restarted when it dies (at most 10 times in 5 min)."""

    def __init__(self, name: str, threads: int, loglevel: str):
        self.argv = [sys.executable, "-m", "celery", "-A", "server.worker", "worker", "-Q", "archive",
                     "--pool", "threads", "--concurrency", str(max(1, threads)), "-n", name,
                     "--without-mingle", "--without-gossip", "--loglevel", loglevel]
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.deaths: list[float] = []
        self.watcher = threading.Thread(target=self._watch, name="archive-worker", daemon=True)

    def start(self) -> None:
        self.process = self._spawn()
        self.watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        parent = os.getpid()

        def die_with_parent() -> None:
            try:
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass
            if os.getppid() != parent:
                os._exit(1)

        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Its own process group: a Ctrl-C reaches the server, which then asks the worker for a warm shutdown.
        return subprocess.Popen(self.argv, env=env, preexec_fn=die_with_parent, process_group=0)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            process = self.process
            if process is None or process.poll() is None:
                self.stopping.wait(1)
                continue
            if self.stopping.is_set():
                return
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 300] + [now]
            if len(self.deaths) > 10:
                log.error("the archive worker died %d times in 5 minutes: not restarted", len(self.deaths))
                return
            log.error("the archive worker exited (code %s): starting it again", process.returncode)
            self.process = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        if not stop_process_group(process, timeout):
            log.error("the archive worker's processes did not end after SIGKILL")


def _server_class() -> type:
    import uvicorn

    class StoppableServer(uvicorn.Server):
        """uvicorn's server, whose SIGTERM/SIGINT end ``run()`` (uvicorn re-raises them once it has shut down,
        which would end this process before it stops its archive worker)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def stop(signum: int, frame: Any) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True
                stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
                if stopping is not None:  # the dashboard's open log streams end, so uvicorn's wait does
                    stopping.set()

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return StoppableServer


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    host, port = args.listen

    import redis
    import uvicorn
    from sqlalchemy.exc import OperationalError

    from server.app import create_app
    from server.archiver import ARCHIVE_TASK, QUEUE, Relay
    from server.db import database_url, display_url, get_engine
    from tasks import config

    try:
        config.redis_target()
        engine = get_engine()
        app = create_app()
        app.state.service.r.ping()
    except config.ConfigError as exc:
        print(f"lava-dispatch server: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"lava-dispatch server: the database {display_url(database_url())} cannot be used: {exc.orig}",
              file=sys.stderr)
        return 4
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        print(f"lava-dispatch server: cannot reach the lab's Redis at {config.redis_target().redacted()}: {exc}",
              file=sys.stderr)
        return 4

    from server.worker import app as celery_app

    Server = _server_class()

    node = f"{socket.gethostname()}:{port}"
    worker = ArchiveWorker(f"archive-{port}@{socket.gethostname()}", args.archive_threads, args.loglevel.upper())
    relay = Relay(config.redis_client(socket_timeout=30), node,
                  lambda job_id: celery_app.send_task(ARCHIVE_TASK, args=[job_id], queue=QUEUE), engine)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level=args.loglevel.lower(),
                                   access_log=args.access_log, lifespan="off"))
    worker.start()
    relay.start()
    log.info("lab server on http://%s:%d (XML-RPC /RPC2, REST /api/v0.2/), archive %s", host, port,
             display_url(engine))
    try:
        server.run()  # until SIGTERM or SIGINT (uvicorn's handlers)
    finally:
        relay.stop()
        worker.stop()
    return 0


__all__ = ["main", "listen_address"]
