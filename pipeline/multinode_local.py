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

from pipeline.coordination import LocalCoordinator
from pipeline.device import Device
from pipeline.download import file_roots_from_env
from pipeline.job import Job, ProblemList
from pipeline.log import TerminalSink
from pipeline.results import summary_table
from pipeline.runner import CANCELED, COMPLETE, JobRunner, Outcome


def members_of(job: Job) -> dict[str, str]:
    """member id -> role, e.g. {"server-1": "server", "client-1": "client", "client-2": "client"}."""
    return {f"{role}-{index}": role for role, spec in job.multinode.roles.items()
            for index in range(1, spec.count + 1)}


def run_multinode_locally(job: Job, device: Device, output_dir: Path, args: argparse.Namespace) -> int:
    other_types = {spec.device_type for spec in job.multinode.roles.values()} - {device.device_type}
    if other_types:
        raise ProblemList([f"protocols.lava-multinode.roles: a local run uses the one device given "
                           f"({device.device_type!r}) for every role; this job also needs "
                           f"{', '.join(sorted(other_types))}"])
    members = members_of(job)
    coordinator = LocalCoordinator()
    group = f"local-{uuid.uuid4().hex[:8]}"
    coordinator.create_group(group, members)
    cancel = threading.Event()
    runners: dict[str, JobRunner] = {}
    for member, role in members.items():
        sinks = [] if args.quiet else [TerminalSink(sys.stderr, "debug" if args.verbose else "info")]
        runners[member] = JobRunner(job, device, output_dir=output_dir / member, job_id=member,
                                    board_name=f"{Path(args.device).stem}-{member}", role=role, sinks=sinks,
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
    for member, outcome in outcomes.items():
        print(f"== {member} ({members[member]})")
        print(summary_table(outcome.results, outcome.state))
        if outcome.error:
            print(f"error ({outcome.error_type}): {outcome.error}")
    print(f"output: {output_dir}")
    states = {outcome.state for outcome in outcomes.values()}
    if states == {COMPLETE} and len(outcomes) == len(members):
        return 0
    return 3 if CANCELED in states else 1
