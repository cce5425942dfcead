"""``lava-run``: LAVA's dispatcher command line, for the tools that call it (tuxrun, a lava-worker).

Same options as LAVA's: ``--device`` (the rendered device dictionary, or a
jinja2 one), ``--dispatcher``, ``--job-id``, ``--output-dir``,
``--validate``, ``--skip-sudo-warning`` and the job definition. The job
runs in this process on the engine; the log goes to stderr as LAVA's YAML
lines (tasks.lava_log) and to ``logs.yaml``; ``description.yaml`` and
``result.yaml`` (the ``lava``/``job`` result) are written to the output
directory as LAVA writes them. Exit 0 when the job finished correctly,
1 otherwise.

A device dictionary as lava-server (or tuxlava) renders it is taken as
LAVA takes it: without ``device_type`` (the job's), with the qemu deploy
method named ``image``, the QEMU command line in ``options`` and
``extra``. A job's named timeout for an action the engine does not have is
ignored with a warning, as LAVA ignores it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from pipeline.builder import unknown_timeout_names
from pipeline.device import Device, parse_device
from pipeline.device_dict import is_device_dictionary
from pipeline.download import file_roots_from_env
from pipeline.errors import LavaError, ProblemList
from pipeline.fields import load_yaml
from pipeline.job import Job
from pipeline.parser import parse_job
from pipeline.results import dump_yaml
from tasks.inputs import UsageError, read_file
from tasks.lava_log import LavaLogSink, LavaSuite, lava_record, lava_result


def job_id(text: str) -> str:
    """A job id goes into directory names and the board's paths: a plain word."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits, '.', '_' and '-' only (at most 64)")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lava-run", description="run a LAVA job definition on one device")
    p.add_argument("--job-id", required=True, metavar="ID", type=job_id, help="the job's identifier")
    p.add_argument("--output-dir", required=True, metavar="DIR", type=Path, help="where the output files go")
    p.add_argument("--validate", action="store_true", help="validate the job and write description.yaml only")
    p.add_argument("--device", required=True, metavar="PATH", help="the device configuration (dictionary)")
    p.add_argument("--dispatcher", metavar="PATH", help="the dispatcher configuration (dispatcher.yaml)")
    p.add_argument("--device-types", action="append", metavar="DIR",
                   help="where a jinja2 device dictionary's templates are (repeatable)")
    p.add_argument("--skip-sudo-warning", action="store_true", help="allow running as a user other than root")
    p.add_argument("definition", help="the job definition")
    return p


def lava_device_data(data: dict[str, Any], job: Job) -> dict[str, Any]:
    """A rendered LAVA device dictionary in the engine's terms (a no-op on one already in them).

    The engine itself takes a device without device_type as the job's and LAVA's ``image`` deploy
    method for tmpfs deploys (pipeline.device, the tmpfs strategy).
    """
    boot = ((data.get("actions") or {}).get("boot") or {}).get("methods") or {}
    for name in ("qemu", "qemu-nfs"):
        params = (boot.get(name) or {}).get("parameters") if isinstance(boot.get(name), dict) else None
        if isinstance(params, dict) and isinstance(params.get("extra"), list):
            # LAVA starts QEMU with the command, its options, then its extra options.
            params["options"] = [*(params.get("options") or []), *params.pop("extra")]
    return data


def load_job(path: str) -> tuple[Job, list[str]]:
    """The job, and a warning for each named timeout the engine ignores (it names no action here)."""
    job = parse_job(read_file(path, "job"))
    return job, unknown_timeout_names(job)


def load_device(args: argparse.Namespace, job: Job) -> Device:
    from pipeline.dispatcher_config import DispatcherConfig

    text = read_file(args.device, "device")
    dispatcher = (DispatcherConfig.parse(read_file(args.dispatcher, "dispatcher config"), args.dispatcher)
                  if args.dispatcher else None)
    if not is_device_dictionary(text):
        data = load_yaml(text, "device", f"{Path(args.device).name}: ")
        if isinstance(data, dict):
            text = dump_yaml(lava_device_data(data, job))
    return parse_device(text, Path(args.device).name, job_context=job.header.context, dispatcher=dispatcher,
                        device_types=args.device_types, job_device_type=job.header.device_type)


def run(args: argparse.Namespace, sink: LavaLogSink) -> bool:
    """Validate, then (unless --validate) run the job; True when it finished correctly."""
    from pipeline.log import JobLogger
    from pipeline.runner import COMPLETE, JobRunner, describe_pipeline

    logger = JobLogger([sink])
    try:
        job, warnings = load_job(args.definition)
        device = load_device(args, job)
        if args.validate:
            for warning in warnings:  # (a run logs them as it starts)
                logger.warning(warning)
            description = {"job": job.name, "device_type": device.device_type,
                           "pipeline": describe_pipeline(job, device)}
            (args.output_dir / "description.yaml").write_text(dump_yaml(description))
            logger.results(lava_result("validate", "pass").as_dict())
            return True
        runner = JobRunner(job, device, output_dir=args.output_dir, job_id=str(args.job_id), sinks=[sink],
                           file_roots=file_roots_from_env(), board_name=device.hostname or "lava-run")
    except (ProblemList, UsageError, LavaError) as exc:
        problems = exc.problems if isinstance(exc, ProblemList) else [str(exc)]
        for problem in problems:
            logger.error(problem)
        logger.results(lava_result("validate", "fail").as_dict())
        logger.results(lava_result("job", "fail", extra=None).as_dict()
                       | {"error_type": "Job", "error_msg": "; ".join(problems)})
        return False
    runner.ctx.ended_hooks.append(LavaSuite())
    runner.ctx.add_result(lava_result("validate", "pass"))
    signal.signal(signal.SIGTERM, _interrupt)
    outcome = runner.run()
    if outcome.state == COMPLETE:
        sink(_info("Job finished correctly"))
        return True
    sink(_info(f"Job {outcome.state.lower()}: {outcome.error}", "error"))
    return False


def _info(message: Any, level: str = "info") -> dict[str, Any]:
    import datetime

    return {"dt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"), "lvl": level, "msg": message}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the job is finalized as when canceled: the board off, nothing left running


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.skip_sudo_warning and os.geteuid() != 0:
        print("lava-run should be executed as root")
        return 1
    args.output_dir = args.output_dir.resolve()
    try:
        args.output_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        print(f"lava-run: unable to create {args.output_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    sink = LavaLogSink(sys.stderr, args.output_dir / "logs.yaml")
    try:
        passed = run(args, sink)
    except Exception:  # noqa: BLE001 - LAVA logs a bug as an exception record and fails the job
        import traceback

        sink(_info(traceback.format_exc(), "exception"))
        sink(_info(lava_result("job", "fail").as_dict() | {"error_type": "Bug"}, "results"))
        passed = False
    finally:
        sink.finish()
    result = {"definition": "lava", "case": "job", "result": "pass" if passed else "fail"}
    (args.output_dir / "result.yaml").write_text(dump_yaml(result))
    return 0 if passed else 1


def console() -> None:
    sys.exit(main())


__all__ = ["main", "console", "lava_device_data", "lava_record"]


if __name__ == "__main__":
    console()
