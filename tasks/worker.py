"""Board workers: ``lava-dispatch worker --device DEVICE.yaml [--name BOARD]``.

Two processes serve a board:

- the **supervisor** (what ``lava-dispatch worker`` runs, what systemd
  starts): a small parent that starts the Celery worker, forwards SIGTERM
  to it, and when it dies for any other reason (``kill -9``, the OOM killer,
  a crash) cleans up at once: it kills the helper process groups the worker
  recorded in its pid file, plus every orphan the kernel hands it (it is a
  *child subreaper*, so QEMU, telnet and the board's shells come to it when
  their parent dies), marks the job the worker was running Incomplete
  naming the lost worker and how it died, then starts a new worker;
- the **board worker**: one Celery worker process, ``--pool solo``,
  concurrency 1, node ``<board>@<host>``, consuming ``board.<board>`` and
  ``lava.submit``. It dies with its supervisor (``PR_SET_PDEATHSIG``), so a
  board is never driven by two workers on one host.

The board worker, before consuming anything, kills whatever helper a
previous worker left, registers the board (device type, tags, device
configuration, host), marks a job that its board was running Incomplete
("worker lost"), sends again the chain of a job that was reserved but never
started, powers the board off and becomes idle, taking the best queued job.

Its heartbeat thread renews the board's heartbeat and the running job's
lease, turns a cancel into the engine's cancel flag, reaps jobs whose lease
expired (killing their helpers when they ran on this host), resends the rest
of a chain whose next message was lost, and ends a job whose worker is stuck
past its job timeout.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.device import Device, load_device
from pipeline.errors import InfrastructureError, LavaError
from pipeline.power import device_commands
from pipeline.processes import kill_group, kill_stale_groups
from pipeline.termination import terminate
from tasks import config
from tasks.ids import job_dir
from tasks.scheduler import Assignment, Lab, board_queue, control_channel, job_key

log = logging.getLogger("lava-dispatch.worker")

EXIT_CONFIG = 2  # a worker that cannot serve its board (bad device file, board served elsewhere): no restart
STALL_SECONDS = float(os.environ.get("LAVA_DISPATCH_STALL_SECONDS", "20"))  # a step not delivered by then is resent
CONSUMER_STALL_SECONDS = 60.0  # messages waiting this long in an idle worker's queue: restart the worker
STUCK_GRACE_SECONDS = 60.0  # past the job timeout by this much, the worker is stuck: it restarts
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
# Stopping (SIGTERM): how long writes to an unreachable Redis are still retried, and how long the
# supervisor waits for its worker before killing it. The job's end then comes from its lease, or from
# the board's next worker, once Redis is back.
STOP_REDIS_SECONDS = 5.0
STOP_KILL_SECONDS = 60
_stop_deadline: float | None = None  # monotonic: set when this process begins to stop


def node_name(board: str) -> str:
    return f"{board}@{config.hostname()}"


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


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------- processes


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


def kill_orphans(exclude: set[int] = frozenset()) -> list[int]:
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


def power_off(device: Device, board: str) -> None:
    for command in device_commands(device, "power_off"):
        try:
            subprocess.run(["/bin/sh", "-c", command.replace("{BOARD}", board)], timeout=30, check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("power_off of %s failed: %s", board, exc)


def run_device_commands(device: Device, which: str, board: str) -> None:
    for command in device_commands(device, which):
        log.info("%s: %s", which, command)
        subprocess.run(["/bin/sh", "-c", command.replace("{BOARD}", board)], timeout=300, check=False,
                       stdin=subprocess.DEVNULL, start_new_session=True)


def start_stop_clock() -> None:
    """From now on Redis is given at most ``STOP_REDIS_SECONDS`` more (safe in a signal handler)."""
    global _stop_deadline
    if _stop_deadline is None:
        _stop_deadline = time.monotonic() + STOP_REDIS_SECONDS


def retry_redis(what: str, fn, seconds: float = 600.0):
    """Call fn until Redis answers (a restart of Redis must not lose a job's end).

    Once the process is stopping, it tries for at most ``STOP_REDIS_SECONDS``
    more: a SIGTERM is obeyed even while Redis is down.
    """
    import redis

    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if _stop_deadline is not None:
                deadline = min(deadline, _stop_deadline)
            if time.monotonic() > deadline:
                raise
            log.warning("%s: Redis unreachable (%s); retrying", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


# ---------------------------------------------------------------- the board worker (Celery process)


@dataclass
class ActiveJob:
    """The job this worker drives now; its runner lives here between the chain's tasks."""

    job_id: str
    attempt: int
    cancel: threading.Event = field(default_factory=threading.Event)
    runner: Any = None
    sink: Any = None
    setup_error: LavaError | None = None
    names: list[str] = field(default_factory=list)
    deadline: float | None = None  # monotonic: job timeout
    last_progress: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None
    finalize_s: float | None = None  # time in the engine's finalize (for the audit trail)
    ran: set[int] = field(default_factory=set)  # the indexes of the actions whose step was claimed here
    workdir: Path | None = None  # the job's scratch space (removed after finalize)


class BoardRuntime:
    def __init__(self, board: str, device_path: Path):
        self.board = board
        self.device_path = device_path
        self.device_text = device_path.read_text()
        self.device = load_device(device_path)
        self.node = node_name(board)
        self.pid = os.getpid()
        self.pid_file = pid_file_for(board)
        self.r = config.redis_client()
        self.lab = Lab(self.r)
        self.active: ActiveJob | None = None
        self.executing = False
        self.stopping = False
        self.stopped = threading.Event()
        self.queue_busy_since: float | None = None
        self.heartbeat_s = config.heartbeat_seconds()

    # -- start-up and shut-down

    def startup(self) -> None:
        # Import the engine now, not in the first job's start step.
        import pipeline.runner  # noqa: F401
        from pipeline.builtin import load_builtin

        load_builtin()

        killed = kill_recorded_helpers(self.pid_file)
        if killed:
            log.warning("killed helpers left by a previous worker of %s: %s", self.board, ", ".join(killed))
        removed = clean_work_root(self.board)
        if removed:
            log.warning("removed the scratch space of jobs a previous worker of %s left: %s", self.board,
                        ", ".join(removed))
        answer = retry_redis("register", lambda: self.lab.register(
            self.board, self.device_text, self.device, node=self.node, pid=self.pid,
            supervisor_pid=int(os.environ.get("LAVA_DISPATCH_SUPERVISOR_PID", "0")), pid_file=str(self.pid_file)))
        if answer[0] == "conflict":
            node, host, pid, age = answer[1]
            raise SystemExit(f"board {self.board} is served by {node} (pid {pid} on {host}, heartbeat "
                             f"{int(age) / 1000:.1f} s ago): stop that worker or choose another --name")
        reserved = False
        if answer[0] == "job":
            job, state, job_board, laststep, worker, worker_pid, current = answer[1]
            if job_board == self.board and state in ("Scheduled", "Running", "Canceling"):
                if int(laststep) >= 0:
                    during = f" during {current}" if current else ""
                    final = self.lab.lose(job, self.board, f"worker lost: {worker or self.node} (pid {worker_pid or '?'})"
                                          f" stopped{during}; {self.node} restarted")
                    log.warning("job %s was running when the previous worker stopped: %s", job, final)
                else:
                    attempt = self.lab.redispatch(job, self.board)
                    if attempt is not None:
                        reserved = True
                        self.lab.dispatch([Assignment(job, self.board, attempt)])
                        log.info("job %s was reserved but never started: its chain is sent again", job)
        power_off(self.device, self.board)
        try:
            run_device_commands(self.device, "prepare", self.board)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("prepare of %s failed: %s", self.board, exc)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._control_loop, name="control", daemon=True).start()
        if not reserved:
            token = uuid.uuid4().hex
            self.lab.dispatch(retry_redis("release", lambda: self.lab.release(self.board, token=token)))
        log.info("board %s (%s) ready: node %s, queue %s", self.board, self.device.device_type, self.node,
                 board_queue(self.board))

    def begin_stop(self, reason: str) -> None:
        """SIGTERM/SIGINT: the running action stops now; finalize runs in ``shutdown``."""
        self.stopping = True
        start_stop_clock()
        active = self.active
        if active is not None:
            active.stop_reason = reason
            # Called in a signal handler: no logging here (the engine's logger may hold its lock).
            if active.runner is not None and active.runner.error is None:
                active.runner.error = InfrastructureError(reason)
            active.cancel.set()
            if active.sink is not None:
                active.sink.close_deadline = _stop_deadline

    def shutdown(self) -> None:
        self.stopping = True
        start_stop_clock()
        self.stopped.set()
        active = self.active
        if active is not None and active.sink is not None:
            active.sink.close_deadline = _stop_deadline
        try:
            placed = retry_redis("stop", lambda: self.lab.stop(self.board, self.node), 30)
            self.lab.dispatch(placed)
        except Exception as exc:  # noqa: BLE001
            log.error("could not mark %s stopped: %s", self.board, exc)
        if active is not None:
            from tasks.jobs import finalize_locally

            finalize_locally(self, active, active.stop_reason or "the worker stopped")
        try:
            run_device_commands(self.device, "destroy", self.board)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("destroy: %s", exc)
        kill_recorded_helpers(self.pid_file)
        try:
            work_root_for(self.board).rmdir()  # only if empty
        except OSError:
            pass

    # -- threads

    def _heartbeat_loop(self) -> None:
        while not self.stopped.wait(self.heartbeat_s):
            try:
                self.heartbeat_once()
            except Exception as exc:  # noqa: BLE001 - Redis away or a bug: keep beating
                log.warning("heartbeat of %s failed: %s", self.board, exc)

    def heartbeat_once(self) -> None:
        active = self.active
        kind, data = self.lab.heartbeat(self.board, self.node, active.job_id if active else None)
        if kind == "job" and active is not None and data and data[0] == "Canceling":
            active.cancel.set()
        elif kind == "gone" and active is not None:
            log.error("job %s is no longer this board's (%s): stopping it", active.job_id, data[0] if data else "")
            active.stop_reason = active.stop_reason or f"the job ended without this worker ({data[0] if data else ''})"
            active.cancel.set()
        elif kind == "replaced":
            log.error("board %s was taken over by %s: this worker stops", self.board, data[0] if data else "?")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        elif kind == "unregistered":
            self.lab.register(self.board, self.device_text, self.device, node=self.node, pid=self.pid,
                              supervisor_pid=int(os.environ.get("LAVA_DISPATCH_SUPERVISOR_PID", "0")),
                              pid_file=str(self.pid_file))
        elif kind == "reserved" and not self.executing and active is None:
            job, state, laststep, age_ms, attempt = data
            if int(age_ms) > STALL_SECONDS * 1000 and self.queue_length() == 0:
                if int(laststep) < 0:
                    new_attempt = self.lab.redispatch(job, self.board)
                    if new_attempt is not None:
                        log.warning("job %s was reserved %s s ago and never started: sending its chain again",
                                    job, int(age_ms) // 1000)
                        self.lab.dispatch([Assignment(job, self.board, new_attempt)])
                else:
                    self.lab.lose(job, self.board, f"worker lost: the job started on {self.board} but this worker "
                                  f"({self.node}) does not hold it")
        elif kind == "idle" and data:
            self.lab.dispatch(Assignment.many(data))
        self.check_progress(active)
        self.lab.reap(on_lost=self.on_lost)

    def on_lost(self, lost) -> None:
        log.warning("job %s on board %s: lease expired -> %s", lost.job, lost.board, lost.state)
        if lost.host == config.hostname() and lost.boot_id == config.boot_id() and lost.pid_file:
            killed = kill_recorded_helpers(Path(lost.pid_file))
            if killed:
                log.warning("killed the helpers of lost board %s: %s", lost.board, ", ".join(killed))

    def queue_length(self) -> int:
        return int(self.r.llen(board_queue(self.board)))

    def check_progress(self, active: ActiveJob | None) -> None:
        """Resend a chain whose next step went missing; restart a worker whose consumer is stuck."""
        now = time.monotonic()
        if self.executing:
            self.queue_busy_since = None
            if active is not None and active.deadline is not None and now > active.deadline + STUCK_GRACE_SECONDS:
                self.stuck(active)
            return
        waiting = self.queue_length()
        if waiting:
            self.queue_busy_since = self.queue_busy_since or now
            if now - self.queue_busy_since > CONSUMER_STALL_SECONDS:
                log.error("%d message(s) wait in %s but this worker takes none: restarting it", waiting,
                          board_queue(self.board))
                os.kill(os.getpid(), signal.SIGKILL)
            return
        self.queue_busy_since = None
        if active is None or now - active.last_progress < STALL_SECONDS:
            return
        state, board, attempt, laststep = self.r.hmget(job_key(active.job_id), "state", "board", "attempt", "laststep")
        names = active.names
        if board == self.board and str(active.attempt) == attempt and state in ("Running", "Canceling"):
            first = int(laststep) + 1
            log.warning("job %s: step %d never arrived: sending the rest of its chain again", active.job_id, first)
        else:
            # The job ended without this worker (its lease was reaped) and its chain stopped: a finalize
            # here still powers the board off, stops the helpers and frees the board.
            first = len(names) + 1
            log.warning("job %s ended without this worker (%s): finalizing it here", active.job_id, state)
        from tasks.scheduler import send_chain

        active.last_progress = now
        send_chain(active.job_id, self.board, active.attempt, names, first, url=self.lab.url)

    def stuck(self, active: ActiveJob) -> None:
        """The job's timeout passed long ago and the action still runs: end the job, restart the worker."""
        reason = (f"job timeout: the worker {self.node} was stuck {STUCK_GRACE_SECONDS:.0f} s past the job "
                  "timeout; it was restarted")
        log.error("job %s: %s", active.job_id, reason)
        try:
            self.lab.lose(active.job_id, self.board, reason, error_type="Job")
        finally:
            os.kill(os.getpid(), signal.SIGKILL)

    def _control_loop(self) -> None:
        """Cancel requests arrive here at once; the heartbeat is the fallback if a message is missed."""
        while not self.stopped.is_set():
            pubsub = None
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(control_channel(self.board))
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        active = self.active
                        if active is not None and message["data"] == active.job_id:
                            log.info("job %s: cancel requested", active.job_id)
                            active.cancel.set()
            except Exception as exc:  # noqa: BLE001 - reconnect
                log.warning("control channel of %s: %s", self.board, exc)
                self.stopped.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass


RUNTIME: BoardRuntime | None = None


def runtime() -> BoardRuntime | None:
    return RUNTIME


def _install_celery_hooks(rt: BoardRuntime) -> None:
    from celery import signals

    def shutting_down(sig: str = "SIGTERM", how: str = "Warm", **_: Any) -> None:
        rt.begin_stop(f"the worker {rt.node} is stopping ({sig})")

    def prerun(**_: Any) -> None:
        rt.executing = True

    def postrun(**_: Any) -> None:
        rt.executing = False
        if rt.active is not None:
            rt.active.last_progress = time.monotonic()

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lava-dispatch worker (board process)")
    parser.add_argument("--device", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    global RUNTIME
    try:
        rt = RUNTIME = BoardRuntime(args.name, Path(args.device))
    except (OSError, LavaError, ValueError) as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - ProblemList from the device file
        print(f"lava-dispatch worker: {args.device}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from tasks.app import app

    _install_celery_hooks(rt)
    try:
        rt.startup()
    except SystemExit as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    queues = f"{board_queue(rt.board)},lava.submit"
    try:
        app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", queues,
                         "--hostname", rt.node, "--without-mingle", "--without-gossip", "--task-events",
                         "--loglevel", args.loglevel])
    finally:
        rt.shutdown()
    return 0


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    def __init__(self, device: Path, board: str, loglevel: str = "INFO", max_restarts: int = 20):
        self.device = device.resolve()
        self.board = board
        self.loglevel = loglevel
        self.max_restarts = max_restarts
        self.child: subprocess.Popen | None = None
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

    def start_child(self) -> subprocess.Popen:
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

    def wait_child(self, child: subprocess.Popen) -> int:
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
            r = config.redis_client()
            lab = Lab(r)

            token = uuid.uuid4().hex

            def lose() -> None:
                job = r.hget(f"lava:board:{self.board}", "job")
                if not job:
                    return
                current = r.hget(job_key(job), "current") or ""
                during = f" during {current}" if current else ""
                reason = f"worker lost: {node} (pid {pid}) {how}{during}"
                final = lab.lose(job, self.board, reason, token=token)
                if final in ("Incomplete", "Canceled"):
                    print(f"lava-dispatch worker: job {job}: {reason} -> {final}", file=sys.stderr)
                    mirror_loss(r, job, reason)

            retry_redis("worker lost", lose, STOP_REDIS_SECONDS if self.stopping else 30)
        except Exception as exc:  # noqa: BLE001 - the restarted worker and the lease reaper also do it
            print(f"lava-dispatch worker: could not record the loss of {node}: {exc}", file=sys.stderr)


def mirror_loss(r: Any, job: str, reason: str) -> None:
    """Write the loss into the job's log stream and its output directory (this host)."""
    from datetime import datetime, timezone

    from pipeline.log import record_line
    from tasks.records import job_results

    record = {"dt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f"), "lvl": "error", "msg": reason}
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


if __name__ == "__main__":
    from tasks.worker import child_main as _child_main  # the module, not __main__: tasks.jobs finds RUNTIME there

    sys.exit(_child_main(sys.argv[1:]))
