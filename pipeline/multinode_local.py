"""Run every role of a multinode job in this process, against an in-process coordinator.

This is ``lava-dispatch run`` for a multinode job: a test writer tries the
job on one machine, without a lab. Each member (role x count) gets its own
board (a copy of the one device), output directory and thread.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from pipeline.device import Device
from pipeline.download import file_roots_from_env
from pipeline.errors import Bug, ProblemList
from pipeline.job import Job, MultinodeRole
from pipeline.local_coordinator import LocalCoordinator
from pipeline.log import Sink, TerminalSink
from pipeline.results import summary_table
from pipeline.runner import CANCELED, COMPLETE, JobRunner, Outcome


def roles_of(job: Job) -> dict[str, MultinodeRole]:
    """The roles of a multinode job (Bug for a job that is not one: callers ask only of those)."""
    if job.multinode is None:
        raise Bug(f"job {job.name!r} is not a multinode job")
    return job.multinode.roles


def members_of(job: Job) -> dict[str, str]:
    """member id -> role, e.g. {"server-1": "server", "client-1": "client", "client-2": "client"}."""
    return {f"{role}-{index}": role for role, spec in roles_of(job).items() for index in range(1, spec.count + 1)}


def run_members(job: Job, device: Device, output_dir: Path, coordinator: Any, *, board_name: str = "local",
                quiet: bool = True, verbose: bool = False, cancel: threading.Event | None = None) -> dict[str, Outcome]:
    """Run every member of ``job`` in threads against ``coordinator`` (any object with
    create_group/client/end_group, e.g. LocalCoordinator or a Redis one); return the outcomes."""
    other_types = {spec.device_type or device.device_type for spec in roles_of(job).values()} - {device.device_type}
    if other_types:
        raise ProblemList([f"protocols.lava-multinode.roles: a local run uses the one device given "
                           f"({device.device_type!r}) for every role; this job also needs "
                           f"{', '.join(sorted(other_types))}"])
    members = members_of(job)
    group = f"local-{uuid.uuid4().hex[:8]}"
    coordinator.create_group(group, members)
    cancel = cancel or threading.Event()
    runners: dict[str, JobRunner] = {}
    for member, role in members.items():
        sinks: list[Sink] = [] if quiet else [TerminalSink(sys.stderr, "debug" if verbose else "info")]
        runners[member] = JobRunner(job, device, output_dir=output_dir / member, job_id=member,
                                    board_name=f"{board_name}-{member}", role=role, sinks=sinks,
                                    cancel_requested=cancel.is_set, file_roots=file_roots_from_env(),
                                    multinode=coordinator.client(group, member))
    outcomes: dict[str, Outcome] = {}
    threads = [threading.Thread(target=lambda m=member, r=runner: outcomes.__setitem__(m, r.run()), name=member)
               for member, runner in runners.items()]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        for thread in threads:
            thread.join()
    finally:
        coordinator.end_group(group)
    return outcomes


def run_multinode_locally(job: Job, device: Device, output_dir: Path, args: argparse.Namespace) -> int:
    """``lava-dispatch run`` of a multinode job: every member in this process, an in-process coordinator."""
    members = members_of(job)
    outcomes = run_members(job, device, output_dir, LocalCoordinator(), board_name=Path(args.device).stem,
                           quiet=args.quiet, verbose=args.verbose)
    for member, outcome in sorted(outcomes.items()):
        print(f"== {member} ({members[member]})")
        print(summary_table(outcome.results, outcome.state))
        if outcome.error:
            print(f"error ({outcome.error_type}): {outcome.error}")
    print(f"output: {output_dir}")
    states = {outcome.state for outcome in outcomes.values()}
    if states == {COMPLETE} and len(outcomes) == len(members):
        return 0
    return 3 if CANCELED in states else 1
