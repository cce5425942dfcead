"""The supervisor of a board worker: ``lava-dispatch worker --device DEVICE.yaml [--name BOARD]``.

Two processes serve a board:

- the **supervisor** (what ``lava-dispatch worker`` runs, what systemd
  starts): a small parent that starts the Celery worker, forwards SIGTERM
  to it, and when it dies for any other reason (``kill -9``, the OOM killer,
  a crash) cleans up at once: it kills the helper process groups the worker
  recorded in its pid file, plus every orphan the kernel hands it (it is a
  *child subreaper*, so QEMU, telnet and the board's shells come to it when
  their parent dies), marks the job the worker was running Incomplete
  naming the lost worker and how it died, then starts a new worker;
- the **board worker** (``python -m tasks.worker``): one Celery worker
  process, ``--pool solo``, concurrency 1, node ``<board>@<host>``, consuming
  ``board.<board>`` and ``lava.submit`` (``tasks.board``). It dies with its
  supervisor (``PR_SET_PDEATHSIG``), so a board is never driven by two
  workers on one host.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.device import load_device
from tasks import config
from tasks.config import node_name
from tasks.helpers import clean_work_root, kill_orphans, kill_recorded_helpers, pid_file_for
from tasks.ids import job_dir
from tasks.keys import JobState, board_key, job_key
from tasks.records import job_results
from tasks.retry import STOP_REDIS_SECONDS, retry_redis
from tasks.scheduler import Lab

EXIT_CONFIG = 2  # a worker that cannot serve its board (bad device file, board served elsewhere): no restart
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
STOP_KILL_SECONDS = 60  # after a SIGTERM, a worker still running this long is killed


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class Supervisor:
    """``lava-dispatch worker``: the parent of one board's worker process."""

    def __init__(self, device: Path, board: str, loglevel: str = "INFO", max_restarts: int = 20):
        self.device = device.resolve()
        self.board = board
        self.loglevel = loglevel
        self.max_restarts = max_restarts
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.pid_file = pid_file_for(board)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            signal.alarm(STOP_KILL_SECONDS)  # a worker that does not stop by then is killed (_on_alarm)
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.child is not None and self.child.poll() is None:
            # os.write, not print: a signal handler must not re-enter a buffered stream
            os.write(2, f"lava-dispatch worker: the worker of {self.board} did not stop within {STOP_KILL_SECONDS}"
                        " s: killing it\n".encode())
            self.child.kill()

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["LAVA_DISPATCH_SUPERVISOR_PID"] = str(os.getpid())
        return env

    def start_child(self) -> subprocess.Popen[bytes]:
        parent = os.getpid()

        def die_with_parent() -> None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)

        argv = [sys.executable, "-m", "tasks.worker", "--device", str(self.device), "--name", self.board,
                "--loglevel", self.loglevel]
        # Its own process group: a Ctrl-C reaches the supervisor only, which asks for one warm shutdown.
        return subprocess.Popen(argv, env=self.child_env(), preexec_fn=die_with_parent, process_group=0)

    def run(self) -> int:
        config.state_dir().mkdir(parents=True, exist_ok=True)
        lock = open(config.state_dir() / f"{self.board}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"lava-dispatch worker: another worker serves board {self.board} on this host", file=sys.stderr)
            return EXIT_CONFIG
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        restarts: list[float] = []
        code = 0
        while True:
            started = time.monotonic()
            self.child = self.start_child()
            status = self.wait_child(self.child)
            code = os.waitstatus_to_exitcode(status)
            self.cleanup(self.child.pid, code)
            if self.stopping or code == 0:
                return 0
            if code == EXIT_CONFIG:
                return EXIT_CONFIG
            restarts = [t for t in restarts if time.monotonic() - t < 300] + [time.monotonic()]
            if len(restarts) > self.max_restarts:
                print(f"lava-dispatch worker: the worker of {self.board} died {len(restarts)} times in 5 minutes; "
                      "giving up", file=sys.stderr)
                return 1
            delay = 0 if time.monotonic() - started > 60 else min(30.0, 0.5 * 2 ** (len(restarts) - 1))
            if delay:
                deadline = time.monotonic() + delay
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self.stopping:
                    return 0

    def wait_child(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for the worker; meanwhile reap the orphans the kernel re-parents to us."""
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                return 0
            if pid == child.pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                return status

    def cleanup(self, pid: int, code: int) -> None:
        """The worker is gone: no helper of its board may survive it, nor its job stay Running."""
        killed = kill_recorded_helpers(self.pid_file)
        orphans = kill_orphans()
        clean_work_root(self.board)
        if killed or orphans:
            print(f"lava-dispatch worker: killed helpers left by worker pid {pid}: "
                  f"{', '.join(killed) or ''} {orphans or ''}".rstrip(), file=sys.stderr)
        if code == 0 or code == EXIT_CONFIG:
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        node = node_name(self.board)
        try:
            r: Any = config.redis_client()
            lab = Lab(r)

            token = uuid.uuid4().hex

            def lose() -> None:
                job = r.hget(board_key(self.board), "job")
                if not job:
                    return
                current = r.hget(job_key(job), "current") or ""
                during = f" during {current}" if current else ""
                reason = f"worker lost: {node} (pid {pid}) {how}{during}"
                final = lab.lose(job, self.board, reason, token=token)
                if final in (JobState.INCOMPLETE, JobState.CANCELED):
                    print(f"lava-dispatch worker: job {job}: {reason} -> {final}", file=sys.stderr)
                    mirror_loss(r, job, reason)

            retry_redis("worker lost", lose, STOP_REDIS_SECONDS if self.stopping else 30)
        except Exception as exc:  # noqa: BLE001 - the restarted worker and the lease reaper also do it
            print(f"lava-dispatch worker: could not record the loss of {node}: {exc}", file=sys.stderr)


def mirror_loss(r: Any, job: str, reason: str) -> None:
    """Write the loss into the job's log stream and its output directory (this host)."""
    from pipeline.log import record_line

    record = {"dt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"), "lvl": "error", "msg": reason}
    output_dir = job_dir(config.output_root(), job)  # rebuilt from the id, never taken from the record
    if r.hget(job_key(job), "output_dir") == str(output_dir) and output_dir.is_dir():
        from pipeline.results import write_results_yaml

        with open(Path(output_dir) / "output.yaml", "a", encoding="utf-8") as handle:
            handle.write(record_line(record))
        try:
            write_results_yaml(job_results(r, job), Path(output_dir) / "results.yaml")
        except Exception:  # noqa: BLE001
            pass


def default_board_name(device: str) -> str:
    return Path(device).stem


def run_worker(device: str, name: str | None, loglevel: str = "INFO", max_restarts: int = 20) -> int:
    path = Path(device)
    if not path.is_file():
        print(f"lava-dispatch worker: device file {device!r} does not exist", file=sys.stderr)
        return EXIT_CONFIG
    try:
        load_device(path)
    except Exception as exc:  # noqa: BLE001 - ProblemList
        problems = getattr(exc, "problems", [str(exc)])
        print(f"lava-dispatch worker: {device}: " + "; ".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    board = name or default_board_name(device)
    return Supervisor(path, board, loglevel, max_restarts).run()


__all__ = ["Supervisor", "run_worker", "mirror_loss", "default_board_name", "EXIT_CONFIG"]
