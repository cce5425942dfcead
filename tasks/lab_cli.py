"""The lab subcommands of ``lava-dispatch``: submit, status, logs, results, cancel, worker, devices, workers.

``server``, ``users``, ``tokens`` and ``db`` are the lab server's (``server/``),
imported only when one of them runs.

They talk to Redis (``LAVA_DISPATCH_REDIS_URL``); only ``submit`` (which
sends the job's chain) and ``worker`` import Celery. Exit codes: 0 done /
Complete, 1 Incomplete, 2 usage or refused, 3 Canceled, 4 the lab's Redis is
unreachable.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import socket
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from tasks.keys import FINAL_STATES, LAB, JobState, job_key

if TYPE_CHECKING:
    from tasks.scheduler import Lab

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_CANCELED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
STATE_EXIT: dict[str, int] = {JobState.COMPLETE: EXIT_OK, JobState.INCOMPLETE: EXIT_INCOMPLETE,
                              JobState.CANCELED: EXIT_CANCELED}
# A group's state in ``status``: the first of its members' states in this order (else Complete).
GROUP_STATE_ORDER = (JobState.RUNNING, JobState.CANCELING, JobState.SCHEDULED, JobState.SUBMITTED,
                     JobState.INCOMPLETE, JobState.CANCELED)


def _lab_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the lab's expected failures into a message and an exit code."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        import redis

        from tasks import config
        from tasks.records import JobNotFound
        from tasks.scheduler import SubmitError

        try:
            config.redis_target()  # a bad LAVA_DISPATCH_REDIS_URL is refused before anything else
            return func(args)
        except (JobNotFound, SubmitError, config.ConfigError) as exc:
            print(f"lava-dispatch: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            print(f"lava-dispatch: cannot reach the lab's Redis at {config.redis_target().redacted()}: {exc}",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        except redis.AuthenticationError as exc:
            print(f"lava-dispatch: Redis refused the credentials of LAVA_DISPATCH_REDIS_URL: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except KeyboardInterrupt:
            return 130

    return wrapper


def _lab() -> Lab:
    from tasks.scheduler import Lab

    return Lab()


def _print_records(records: Iterable[dict[str, Any]], verbose: bool, raw: bool, stream: TextIO | None = None) -> None:
    from pipeline.log import TerminalSink, record_line

    stream = stream or sys.stdout
    if raw:
        for record in records:
            stream.write(record_line(record))
            stream.flush()
        return
    sink = TerminalSink(stream, "debug" if verbose else "info")
    for record in records:
        sink(record)


def _targets(lab: Lab, text: str) -> tuple[str | None, list[str]]:
    """(group id or None, job ids): a multinode group's id stands for all its sub-jobs."""
    from tasks.ids import InvalidJobId, check_job_id
    from tasks.records import resolve_job_id

    try:
        job_id = check_job_id(text)
    except InvalidJobId:
        return None, [resolve_job_id(lab.r, text)]  # raises JobNotFound saying what an id is
    members = lab.group_members(job_id)
    if members:
        return job_id, list(members)
    return None, [resolve_job_id(lab.r, job_id)]


def priority_argument(text: str) -> int | str:
    """``--priority``: a number is given as digits; the rule is the job file's (``Lab.submit`` applies it)."""
    return int(text) if text.isascii() and text.isdigit() else text


def _worst_exit(states: list[str]) -> int:
    codes = [STATE_EXIT.get(state, EXIT_INCOMPLETE) for state in states]
    return EXIT_INCOMPLETE if EXIT_INCOMPLETE in codes else max(codes, default=EXIT_OK)


def _final_state(lab: Lab, job_id: str) -> str:
    """Wait for the end of the job: a blocking read of its log stream up to the end marker."""
    from tasks.records import read_log

    for _ in read_log(lab.r, job_id, follow=True):
        pass
    state = lab.r.hget(job_key(job_id), "state")  # the end marker and the state are written together
    return state if state in FINAL_STATES else JobState.INCOMPLETE


@_lab_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from tasks.inputs import read_file
    from tasks.records import read_logs

    text = read_file(args.job, "job")
    lab = _lab()
    submitted = lab.submit(text, priority=args.priority, queue_anyway=args.queue_anyway,
                           submitter=f"{getpass.getuser()}@{socket.gethostname()}")
    print(submitted.job_id, flush=True)
    if submitted.members:
        placed = {a.job: a.board for a in submitted.assignments}
        for job_id in submitted.members:
            where = f"on board {placed[job_id]}" if job_id in placed else "queued"
            print(f"group member {job_id} {where}", file=sys.stderr)
    elif submitted.board:
        print(f"scheduled on board {submitted.board}", file=sys.stderr)
    else:
        print("queued: no idle board of this type now; the first one free takes it", file=sys.stderr)
    if not (args.wait or args.follow):
        return EXIT_OK
    jobs = submitted.members or [submitted.job_id]
    if args.follow:
        _print_records(read_logs(lab.r, jobs, follow=True), args.verbose, False, sys.stderr)
    states = [_final_state(lab, job_id) for job_id in jobs]
    for job_id, state in zip(jobs, states, strict=True):
        print(f"job {job_id}: {state}")
    return _worst_exit(states)


@_lab_errors
def cmd_status(args: argparse.Namespace) -> int:
    from tasks.records import get_job, iso, shown_id, status_view

    lab = _lab()
    lab.reap()
    if not args.job:
        ids = lab.r.zrevrange(LAB.jobs, 0, args.limit - 1)
        pipe = lab.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "state", "board", "device_type", "name", "submitted", "health_check")
        rows = [(job_id, *row) for job_id, row in zip(ids, pipe.execute(), strict=True) if row[0]]
        print(f"{'JOB':10}  {'STATE':10}  {'BOARD':14}  {'TYPE':14}  {'SUBMITTED':24}  NAME")
        for job_id, state, board, device_type, name, submitted, check in rows:
            print(f"{job_id:10}  {state:10}  {board or '-':14}  {device_type or '-':14}  "
                  f"{iso(submitted) or '-':24}  {name or ''}{' [health check]' if check == '1' else ''}")
        return EXIT_OK
    group, jobs = _targets(lab, args.job)
    views = [status_view(get_job(lab.r, job_id)) for job_id in jobs]
    for view in views:  # a queued job that no board can take says so
        if view["state"] == JobState.SUBMITTED and view.get("device_type"):
            waiting = lab.queue_summary().get(view["device_type"], {}).get("waiting")
            if waiting:
                view["waiting"] = waiting
    if group:
        states = {view["state"] for view in views}
        state = next((s for s in GROUP_STATE_ORDER if s in states), JobState.COMPLETE).value  # YAML: a plain str
        print(yaml.safe_dump({"group": shown_id(group), "state": state, "members": views}, sort_keys=False,
                             width=120), end="")
    else:
        print(yaml.safe_dump(views[0], sort_keys=False, width=120), end="")
    return EXIT_OK


@_lab_errors
def cmd_logs(args: argparse.Namespace) -> int:
    from tasks.records import read_logs

    lab = _lab()
    _, jobs = _targets(lab, args.job)
    _print_records(read_logs(lab.r, jobs, follow=args.follow), args.verbose, args.yaml)
    return EXIT_OK


@_lab_errors
def cmd_results(args: argparse.Namespace) -> int:
    from pipeline.results import junit_xml
    from tasks.records import get_job, job_results

    lab = _lab()
    group, jobs = _targets(lab, args.job)
    results = []
    for job_id in jobs:
        member = get_job(lab.r, job_id).get("member")
        results += [{**result, "member": member} if group else result for result in job_results(lab.r, job_id)]
    if args.format == "junit":
        print(junit_xml(results, get_job(lab.r, jobs[0]).get("name") or jobs[0]), end="")
    else:
        print(yaml.safe_dump(results, sort_keys=False, width=120), end="")
    return EXIT_OK


@_lab_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    lab = _lab()
    group, jobs = _targets(lab, args.job)
    job_id = jobs[0]  # canceling one member cancels its whole group
    state, board = lab.cancel(job_id)
    if group:
        states = [_final_state(lab, j) for j in jobs] if args.wait else []
        print(f"group {group}: {state if not states else ', '.join(states)}")
        return EXIT_OK
    if state == JobState.CANCELING:
        print(f"job {job_id}: canceling on board {board}")
        if args.wait:
            state = _final_state(lab, job_id)
            print(f"job {job_id}: {state}")
    elif state == JobState.CANCELED:
        print(f"job {job_id}: Canceled")
    else:
        print(f"job {job_id} is already {state}: nothing to cancel")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from tasks import config
    from tasks.worker import run_worker

    try:
        config.redis_target()
    except config.ConfigError as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_worker(args.device, args.name, args.loglevel, args.max_restarts)


@_lab_errors
def cmd_devices(args: argparse.Namespace) -> int:
    from tasks import health_cli

    lab = _lab()
    shown = health_cli.run(lab, args)
    if shown is not None:
        return shown
    if args.forget:
        answer = lab.forget(args.forget)
        messages = {"forgotten": f"board {args.forget} removed from the lab",
                    "missing": f"no board {args.forget!r}", "busy": f"board {args.forget} has a job: cancel it first",
                    "online": f"board {args.forget} is online: stop its worker first"}
        print(messages.get(answer, answer), file=sys.stderr if answer != "forgotten" else sys.stdout)
        return EXIT_OK if answer == "forgotten" else EXIT_USAGE
    lab.reap()
    boards = lab.boards()
    if args.yaml:
        print(yaml.safe_dump(boards, sort_keys=False), end="")
        return EXIT_OK
    if not boards:
        print("no board is registered: start one with `lava-dispatch worker --device DEVICE.yaml`")
        return EXIT_OK
    print(f"{'BOARD':16}  {'TYPE':14}  {'HEALTH':11}  {'STATE':8}  {'JOB':10}  {'WORKER':28}  HEARTBEAT")
    for b in boards:
        age = "never" if b["heartbeat_age"] is None else f"{b['heartbeat_age']:.1f} s ago"
        print(f"{b['board']:16}  {b['device_type'] or '-':14}  {b['health']:11}  {b['state']:8}  {b['job'] or '-':10}  "
              f"{b['worker'] or '-':28}  {age}")
    queued = lab.queue()
    if queued:
        print(f"{len(queued)} job(s) queued")
    return EXIT_OK


def cmd_server_group(args: argparse.Namespace) -> int:
    """``server``, ``users``, ``tokens``, ``db``: the lab server's commands, imported only when used."""
    if args.command == "server":
        from server.serve import main

        return main(args.argv)
    from server.admin_cli import GROUPS

    return GROUPS[args.command](args.argv)


def add_server_commands(sub: Any) -> None:
    """The lab server's subcommands; each parses its own arguments (``lava-dispatch users --help``)."""
    for name, text in (("server", "serve the lab's XML-RPC and REST APIs and archive finished jobs"),
                       ("users", "the lab server's users: add, list"),
                       ("tokens", "API tokens and remote tokens of users: add, list, delete, add-remote, ..."),
                       ("db", "the lab database: upgrade, purge")):
        p = sub.add_parser(name, help=text, add_help=False, prefix_chars="\0")
        p.add_argument("argv", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_server_group)


def add_commands(sub: Any) -> None:
    """Register the lab subcommands on ``lava-dispatch``'s subparsers."""
    from tasks import health_cli

    p = sub.add_parser("submit", help="submit a job to the lab; prints the job id the lab assigned first")
    p.add_argument("job", help="job YAML file")
    p.add_argument("--priority", type=priority_argument,
                   help="high, medium, low or 0-100 (default: the job's own priority)")
    p.add_argument("--wait", action="store_true", help="wait for the end: exit 0 Complete, 1 Incomplete, 3 Canceled")
    p.add_argument("--follow", "-f", action="store_true", help="stream the log (stderr) until the job ends; as --wait")
    p.add_argument("--queue-anyway", action="store_true",
                   help="queue the job even if no board of its device type is registered yet")
    p.add_argument("--verbose", "-v", action="store_true", help="with --follow: also debug lines")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state, board, current action, durations, error (or recent jobs)")
    p.add_argument("job", nargs="?", help="job id (42; 42.1 a member of group 42); none: list recent jobs")
    p.add_argument("--limit", type=int, default=20, help="how many recent jobs to list")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="a job's log; --follow waits for new lines until the job ends")
    p.add_argument("job")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true", help="also debug lines")
    p.add_argument("--yaml", action="store_true", help="raw output.yaml lines ({dt, lvl, msg})")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("results", help="a job's results")
    p.add_argument("job")
    p.add_argument("--format", choices=("yaml", "junit"), default="yaml")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="wait until the job has ended")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("worker", help="serve one board: a Celery worker (solo pool) on queue board.<name>")
    p.add_argument("--device", required=True, help="the board's device configuration YAML")
    p.add_argument("--name", help="board name (default: the device file's stem)")
    p.add_argument("--loglevel", default="INFO", help="worker log level (DEBUG, INFO, WARNING)")
    p.add_argument("--max-restarts", type=int, default=20,
                   help="give up when the board worker dies this many times within 5 minutes")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("devices", help="the boards of the lab: idle, busy or offline, and their job")
    p.add_argument("--yaml", action="store_true")
    p.add_argument("--forget", metavar="BOARD", help="remove an offline board from the lab")
    p.set_defaults(func=cmd_devices)
    health_cli.add_device_commands(p)
    health_cli.add_worker_commands(sub, cmd_devices)

    add_server_commands(sub)


__all__ = ["add_commands"]
