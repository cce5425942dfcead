"""Building the pipeline of a job on a device: strategies choose, then every action gets its timeouts.

Each block (repeats expanded, only the role's blocks for a multinode member)
goes to the first strategy of its kind that accepts it; when none does, the
job is rejected with every strategy's reason. A named timeout that names no
action of the engine is ignored, as LAVA does (``unknown_timeout_names``
gives the warnings). Then one rule (``TimeoutSources.effective``) gives
each action its timeout, and each action that uses a connection its
connection timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.action import Action, Pipeline, RetryAction
from pipeline.blocks import ActionBlock, RepeatBlock
from pipeline.builtin import load_builtin
from pipeline.device import Device
from pipeline.errors import Bug, ProblemList
from pipeline.job import Job
from pipeline.registry import Registry
from pipeline.strategy import BuildPlan, Strategy
from pipeline.timeouts import TimeoutSources, connection_timeout, retry_share

POWER_OFF_TIMEOUT = 10.0  # LAVA's


@dataclass
class BuiltPipeline:
    pipeline: Pipeline  # the top-level actions run in order
    blocks: list[ActionBlock]  # the job block of each top-level action, repeats expanded
    finalize: Action  # ``finalize``: run while the job is finalized, whatever happened

    def describe(self) -> list[dict[str, Any]]:
        """The pipeline as LAVA describes it: the actions run in order, then finalize."""
        return self.pipeline.describe() + self.finalize_described()

    def finalize_described(self) -> list[dict[str, Any]]:
        return [action.describe() for action in self.finalize.walk()]


def expand(job: Job) -> list[ActionBlock]:
    """Top-level order of execution: ``repeat: N`` and repeat blocks opened."""
    order: list[ActionBlock] = []
    for item in job.actions:
        if isinstance(item, RepeatBlock):
            for _ in range(item.count):
                order.extend(item.actions)
        else:
            repeat = item.settings.repeat if item.settings is not None else None
            order.extend([item] * (repeat or 1))
    return order


def select(block: ActionBlock, device: Device, registry: Registry) -> type[Strategy] | list[str]:
    """The first strategy that accepts ``block`` on ``device``, or every strategy's reason."""
    reasons = []
    for candidate in registry.strategies_for(block.kind):
        ok, reason = candidate.accepts(device, block.params)
        if ok:
            return candidate
        reasons.append(f"{candidate.__name__}: {reason}")
    return reasons


def build_pipeline(job: Job, device: Device, role: str | None = None,
                   registry: Registry | None = None) -> BuiltPipeline:
    """Build the whole pipeline of a job (or of one role of a multinode job) on a device.

    Raises ProblemList naming every block that no strategy accepts.
    """
    registry = registry or load_builtin()
    problems: list[str] = []
    if job.header.device_type and job.header.device_type != device.device_type:
        problems.append(f"device_type: the job asks for {job.header.device_type!r} but the device "
                        f"is a {device.device_type!r}")
    top = Pipeline()
    blocks = []
    order = [block for block in expand(job)
             if role is None or block.kind == "submit" or role in block.roles]
    for position, block in enumerate(order):
        chosen = select(block, device, registry)
        if isinstance(chosen, list):
            problems.append(f"{block.place}: no strategy accepts this {block.kind} on device type "
                            f"{device.device_type!r}: " + "; ".join(chosen))
            continue
        try:
            action = chosen.build(block, BuildPlan(job, device, order, position))
        except ProblemList as exc:
            problems.extend(exc.problems)
            continue
        top.add(action)
        blocks.append(block)
    if problems:
        raise ProblemList(problems)
    assign_timeouts(top, blocks, job, device)
    return BuiltPipeline(top, blocks, finalize_action(top, job, device, registry))


def finalize_action(top: Pipeline, job: Job, device: Device, registry: Registry) -> Action:
    """``finalize`` numbered after the last top-level action, with its timeouts (job and device, as any action)."""
    if registry.finalize is None:
        raise Bug("no finalize action is registered (pipeline.builtin registers it)")
    final = registry.finalize()
    final.level = str(len(top.actions) + 1)
    if final.pipeline is not None:
        final.pipeline.relevel()
    jt, dt = job.header.timeouts, device.timeouts
    sources = TimeoutSources(device_action=dt.action, job_action=jt.action, device_named=dt.actions,
                             job_named=jt.actions)
    named_only = TimeoutSources(device_named=dt.actions, job_named=jt.actions)
    for each in final.walk():
        if each.name == "power-off":  # LAVA's 10 s, changed only by a timeout naming it
            each.timeout, each.timeout_source = named_only.effective(each.names, default=POWER_OFF_TIMEOUT)
        else:
            each.timeout, each.timeout_source = sources.effective(each.names)
    return final


def unknown_timeout_names(job: Job, registry: Registry | None = None) -> list[str]:
    """A warning for each named timeout naming no action of the engine: LAVA ignores them, and so do we."""
    names = (registry or load_builtin()).action_names
    warnings: list[str] = []

    def check(table: dict[str, Any] | None, place: str) -> None:
        for name in table or {}:
            if name not in names:
                warnings.append(f"{place}.{name}: no action is named {name!r}: this timeout is ignored (see "
                                "`lava-dispatch validate` for the names in a pipeline)")

    check(job.header.timeouts.actions, "timeouts.actions")
    check(job.header.timeouts.connections, "timeouts.connections")
    for block in job.flat_actions():
        if block.settings is not None:
            check(block.settings.timeouts, f"{block.place}.timeouts")
    return warnings


def assign_timeouts(top: Pipeline, blocks: list[ActionBlock], job: Job, device: Device) -> None:
    """Give every action its effective timeout and, if it uses a connection, its connection timeout."""
    jt, dt = job.header.timeouts, device.timeouts
    for action, block in zip(top.actions, blocks, strict=True):
        params = block.settings
        sources = TimeoutSources(
            device_action=dt.action,
            job_action=jt.action,
            device_named=dt.actions,
            job_named=jt.actions,
            block_kind_default=getattr(jt, block.kind, None),
            block=params.timeout if params is not None else None,
            block_named=params.timeouts if params is not None else None,
        )
        for each in action.walk():  # parents first: a retry's timeout is known before its attempts' share
            parent = each.parent
            share = (retry_share(parent.timeout, parent.attempts) if isinstance(parent, RetryAction) else None)
            each.timeout, each.timeout_source = sources.effective(each.names, retry_share=share)
            if each.uses_connection:
                each.connection_timeout = connection_timeout(each.names, dt.connection, jt.connection,
                                                             dt.connections, jt.connections)
