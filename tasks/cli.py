"""The ``lava-dispatch`` command.

``validate``, ``schema`` and ``run`` need no broker; the lab commands
(``submit``, ``status``, ``logs``, ``results``, ``cancel``, ``worker``,
``devices``) talk to Redis and import Celery only when used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.device import Device, parse_device
from pipeline.download import file_roots_from_env
from pipeline.errors import ProblemList
from pipeline.job import Job
from pipeline.parser import job_json_schema, parse_job
from tasks.inputs import UsageError, read_file

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_CANCELED = 0, 1, 2, 3


def load_job_and_device(job_path: str, device_path: str | None, args: Any = None) -> tuple[Job, Device | None]:
    job = parse_job(read_file(job_path, "job"))
    device = None
    if device_path:
        text = read_file(device_path, "device")
        # A device dictionary (jinja2) is rendered with the job's context, --device-types and --dispatcher.
        from pipeline.dispatcher_config import DispatcherConfig

        config = getattr(args, "dispatcher", None)
        dispatcher = DispatcherConfig.parse(read_file(config, "dispatcher config"), config) if config else None
        device = parse_device(text, Path(device_path).name, job_context=job.header.context, dispatcher=dispatcher,
                              device_types=getattr(args, "device_types", None),
                              job_device_type=job.header.device_type)
    return job, device


def checked_output_dir(path: Path) -> Path:
    """Refuse, before the job starts, an output directory that is a file or cannot be created."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--output-dir {str(path)!r}: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {str(path)!r}: {str(existing)!r} is not writable")
    return path


def print_problems(problems: list[str]) -> None:
    print(f"the job is rejected ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.runner import describe_pipeline

    job, device = load_job_and_device(args.job, args.device, args)
    from pipeline.builder import unknown_timeout_names

    for warning in unknown_timeout_names(job):
        print(f"warning: {warning}", file=sys.stderr)
    if device is None:
        print(yaml.safe_dump({"job": job.name, "valid": True}, sort_keys=False), end="")
        return EXIT_OK
    multinode = job.multinode
    output: dict[str, Any]
    if multinode and multinode.subjob:  # one member of a group, as lava-server hands it to lava-run
        output = {"job": job.name, "device_type": device.device_type, "role": multinode.role,
                  "pipeline": describe_pipeline(job, device, multinode.role)}
    elif multinode:
        roles = {role: describe_pipeline(job, device, role) for role, spec in multinode.roles.items()
                 if spec.device_type == device.device_type}
        if not roles:
            raise ProblemList([f"device_type: no role of this job uses device type {device.device_type!r}"])
        output = {"job": job.name, "roles": {r: {"pipeline": p} for r, p in roles.items()}}
        output["pipeline"] = next(iter(roles.values()))
    else:
        output = {"job": job.name, "device_type": device.device_type, "pipeline": describe_pipeline(job, device)}
    print(yaml.safe_dump(output, sort_keys=False, width=120), end="")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(job_json_schema(), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.log import TerminalSink
    from pipeline.results import summary_table
    from pipeline.runner import CANCELED, COMPLETE, JobRunner

    job, device = load_job_and_device(args.job, args.device, args)
    if device is None:
        raise UsageError("run needs --device DEVICE.yaml")
    output_dir = checked_output_dir(Path(args.output_dir or Path.cwd() / "output" / Path(args.job).stem))
    if job.multinode and job.multinode.subjob:
        raise UsageError("this is one member's sub-job of a multinode group (the form lava-server hands to "
                         "lava-run): run the multinode job with all its roles, or validate this one")
    if job.multinode:
        from pipeline.multinode_local import run_multinode_locally

        return run_multinode_locally(job, device, output_dir, args)
    sinks: list[Callable[[dict[str, Any]], None]] = [] if args.quiet else [
        TerminalSink(sys.stderr, "debug" if args.verbose else "info")]
    # A file:// URL may name any local path the user can read, unless the roots are set.
    runner = JobRunner(job, device, output_dir=output_dir, sinks=sinks, file_roots=file_roots_from_env(),
                       board_name=Path(args.device).stem)
    with terminate_as_interrupt():
        outcome = runner.run()
    print(summary_table(outcome.results, outcome.state))
    if outcome.error:
        print(f"error ({outcome.error_type}): {outcome.error}")
    print(f"output: {output_dir}")
    return {COMPLETE: EXIT_OK, CANCELED: EXIT_CANCELED}.get(outcome.state, EXIT_INCOMPLETE)


class terminate_as_interrupt:
    """SIGTERM ends a run the way Ctrl-C does: the job is finalized, nothing is left running."""

    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self._raise)

    def _raise(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self.previous)


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-types", action="append", metavar="DIR", help="where a device dictionary's templates "
                   "are (repeatable, or DIR:DIR; default $LAVA_DISPATCH_DEVICE_TYPES), before the built-in ones")
    p.add_argument("--dispatcher", metavar="FILE",
                   help="the worker's dispatcher.yaml (default $LAVA_DISPATCH_DISPATCHER_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lava-dispatch", description="LAVA-compatible board-test dispatcher")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a job (and its pipeline on a device) without running it")
    p.add_argument("job")
    p.add_argument("--device", help="device configuration YAML: also build and print the pipeline")
    add_device_options(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the job format as JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("run", help="run a job in this process on a board described by --device")
    p.add_argument("job")
    p.add_argument("--device", required=True)
    add_device_options(p)
    p.add_argument("--output-dir", help="where output.yaml, results.yaml, ... go (default ./output/<job>)")
    p.add_argument("--verbose", "-v", action="store_true", help="also show debug lines")
    p.add_argument("--quiet", "-q", action="store_true", help="do not stream the log")
    p.set_defaults(func=cmd_run)

    from tasks.lab_cli import add_commands
    add_commands(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ProblemList as exc:
        print_problems(exc.problems)
        return EXIT_INCOMPLETE if args.command == "validate" else EXIT_USAGE
    except UsageError as exc:
        print(f"lava-dispatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# Commands that are over once they return: their job is finalized, their files written and closed.
FINISHED_WHEN_RETURNED = ("run", "validate", "schema")


def console() -> None:
    """The ``lava-dispatch`` command: run it, then exit.

    After a local run nothing is left to release, so the interpreter's own
    teardown (tens of milliseconds of freeing modules) is skipped.
    """
    args = build_parser().parse_args()
    code = run_command(args)
    if args.command in FINISHED_WHEN_RETURNED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):  # a reader that went away, a stream already closed
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
