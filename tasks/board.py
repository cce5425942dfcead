"""The board worker's runtime: one board, its device, the job it drives, its heartbeat.

The board worker (one Celery worker process per board, ``tasks.worker``),
before consuming anything, kills whatever helper a previous worker left,
registers the board (device type, tags, device configuration, host), marks a
job that its board was running Incomplete ("worker lost"), sends again the
chain of a job that was reserved but never started, powers the board off and
becomes idle, taking the best queued job.

Its heartbeat thread renews the board's heartbeat and the running job's
lease, reaps jobs whose lease expired (killing their helpers when they ran on
this host), resends the rest of a chain whose next message was lost, and ends
a job whose worker is stuck past its job timeout; its control thread turns a
cancel into the engine's cancel flag.

The Celery tasks of this process find the runtime with ``current()``
(``install`` sets it when the worker starts).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.device import Device, load_device
from pipeline.errors import InfrastructureError, JobError
from tasks import config, health
from tasks.chains import send_chain
from tasks.config import node_name
from tasks.helpers import clean_work_root, kill_recorded_helpers, pid_file_for, work_root_for
from tasks.keys import ACTIVE_STATES, JobState, board_queue, control_channel, job_key
from tasks.retry import retry_redis, start_stop_clock, stop_deadline
from tasks.scheduler import Assignment, Lab
from tasks.session import ActiveJob, finalize_locally
from tasks.state import LostJob

log = logging.getLogger("lava-dispatch.worker")

STALL_SECONDS = float(os.environ.get("LAVA_DISPATCH_STALL_SECONDS", "20"))  # a step not delivered by then is resent
CONSUMER_STALL_SECONDS = 60.0  # messages waiting this long in an idle worker's queue: restart the worker
STUCK_GRACE_SECONDS = 60.0  # past the job timeout by this much, the worker is stuck: it restarts


def power_off(device: Device, board: str) -> None:
    commands = device.commands.power_off
    for command in [commands] if isinstance(commands, str) else list(commands or []):
        try:
            subprocess.run(["/bin/sh", "-c", command.replace("{BOARD}", board)], timeout=30, check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("power_off of %s failed: %s", board, exc)


def run_device_commands(device: Device, which: str, board: str) -> None:
    commands = getattr(device.commands, which)
    for command in [commands] if isinstance(commands, str) else list(commands or []):
        log.info("%s: %s", which, command)
        subprocess.run(["/bin/sh", "-c", command.replace("{BOARD}", board)], timeout=300, check=False,
                       stdin=subprocess.DEVNULL, start_new_session=True)


class BoardRuntime:
    """The board worker's process: the board, its Redis, the job it drives now, its threads."""

    def __init__(self, board: str, device_path: Path):
        self.board = board
        self.device_path = device_path
        self.device_text = device_path.read_text()
        self.device = load_device(device_path)
        self.node = node_name(board)
        self.pid = os.getpid()
        self.pid_file = pid_file_for(board)
        self.r: Any = config.redis_client()
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
            if job_board == self.board and state in ACTIVE_STATES:
                if int(laststep) >= 0:
                    during = f" during {current}" if current else ""
                    final = self.lab.lose(job, self.board, f"worker lost: {worker or self.node} "
                                          f"(pid {worker_pid or '?'}) stopped{during}; {self.node} restarted")
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
        change = health.setup_board(self.lab, self.board, self.device.device_type)
        log.info("board %s: health %s%s", self.board, change.new,
                 f" (health check job {change.health_check})" if change.health_check else "")
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
                active.sink.close_deadline = stop_deadline()

    def shutdown(self) -> None:
        self.stopping = True
        start_stop_clock()
        self.stopped.set()
        active = self.active
        if active is not None and active.sink is not None:
            active.sink.close_deadline = stop_deadline()
        try:
            placed = retry_redis("stop", lambda: self.lab.stop(self.board, self.node), 30)
            self.lab.dispatch(placed)
        except Exception as exc:  # noqa: BLE001
            log.error("could not mark %s stopped: %s", self.board, exc)
        if active is not None:
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
        if kind == "job" and active is not None and data and data[0] == JobState.CANCELING:
            active.cancel.set()
        elif kind == "gone" and active is not None and self.active is active:  # not a job that ended meanwhile
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
        if active is None and not self.executing and not self.stopping:
            self.lab.ensure_health_check(self.board)  # every N hours, or after a check was lost

    def on_lost(self, lost: LostJob) -> None:
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
        if board == self.board and str(active.attempt) == attempt and state in (JobState.RUNNING,
                                                                                 JobState.CANCELING):
            first = int(laststep) + 1
            log.warning("job %s: step %d never arrived: sending the rest of its chain again", active.job_id, first)
        else:
            # The job ended without this worker (its lease was reaped) and its chain stopped: a finalize
            # here still powers the board off, stops the helpers and frees the board.
            first = len(names) + 1
            log.warning("job %s ended without this worker (%s): finalizing it here", active.job_id, state)
        active.last_progress = now
        send_chain(active.job_id, self.board, active.attempt, names, first, url=self.lab.url)

    def stuck(self, active: ActiveJob) -> None:
        """The job's timeout passed long ago and the action still runs: end the job, restart the worker."""
        reason = (f"job timeout: the worker {self.node} was stuck {STUCK_GRACE_SECONDS:.0f} s past the job "
                  "timeout; it was restarted")
        log.error("job %s: %s", active.job_id, reason)
        try:
            self.lab.lose(active.job_id, self.board, reason, error_type=JobError.error_type)
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


_RUNTIME: BoardRuntime | None = None


def install(rt: BoardRuntime) -> None:
    """This process is the worker of ``rt``'s board (its Celery tasks find it with ``current``)."""
    global _RUNTIME
    _RUNTIME = rt


def current() -> BoardRuntime | None:
    """The board runtime of this process, None outside a board worker (a dedicated submit worker)."""
    return _RUNTIME


def install_celery_hooks(rt: BoardRuntime) -> None:
    """The worker's stop (SIGTERM) and each task's start and end, as the runtime needs to know them."""
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


__all__ = ["BoardRuntime", "install", "current", "install_celery_hooks", "node_name", "power_off",
           "run_device_commands", "STALL_SECONDS"]
