"""Strategies: which actions a job gets on a device.

Each strategy says whether it accepts a block of the job on a device
(``accepts(device, params) -> (bool, reason)``) and builds the top-level
action for it. Registration is explicit: ``@strategy("boot", priority)``.
When no strategy accepts a block, the job is rejected with every
strategy's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipeline.action import Action, Pipeline
from pipeline.device import Device
from pipeline.job import ActionBlock, Job, ProblemList, RepeatBlock
from pipeline.timeouts import TimeoutSources, connection_timeout


class Strategy:
    """Chooses and builds the action for one kind of block."""

    kind = ""  # deploy, boot, test, submit
    priority = 0

    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        raise NotImplementedError

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        raise NotImplementedError


@dataclass
class BuildPlan:
    """What a strategy may look at while building: the whole job in execution order."""

    job: Job
    device: Device
    order: list[ActionBlock]  # top-level blocks of this board, repeats expanded
    position: int  # index of the block being built in ``order``

    def stages_after(self) -> list[tuple[int, ActionBlock]]:
        """(stage, block) of each test action this deployment prepares: up to the next deploy."""
        found = []
        for index in range(self.position + 1, len(self.order)):
            block = self.order[index]
            if block.kind == "deploy":
                break
            if block.kind == "test":
                found.append((self.stage_of(index), block))
        return found

    def stage_of(self, index: int) -> int:
        return sum(1 for block in self.order[:index] if block.kind == "test")

    def deployed_before(self) -> bool:
        return any(block.kind == "deploy" for block in self.order[: self.position])


REGISTRY: dict[str, list[type[Strategy]]] = {"deploy": [], "boot": [], "test": [], "submit": []}
ACTION_NAMES: set[str] = set()  # every action name (and alias) the engine has, for named timeouts


def strategy(kind: str, priority: int = 0) -> Callable[[type[Strategy]], type[Strategy]]:
    def register(cls: type[Strategy]) -> type[Strategy]:
        cls.kind, cls.priority = kind, priority
        REGISTRY[kind].append(cls)
        REGISTRY[kind].sort(key=lambda item: -item.priority)
        return cls

    return register


def known_action(cls: type[Action]) -> type[Action]:
    """Class decorator: record an action's names so named timeouts can be checked."""
    ACTION_NAMES.add(cls.name)
    ACTION_NAMES.update(cls.aliases)
    return cls


def _load_actions() -> None:
    # Importing the action modules registers their strategies.
    from pipeline.actions import boot, deploy, submit, test  # noqa: F401


def select(block: ActionBlock, device: Device) -> type[Strategy] | list[str]:
    reasons = []
    for candidate in REGISTRY[block.kind]:
        ok, reason = candidate.accepts(device, block.params)
        if ok:
            return candidate
        reasons.append(f"{candidate.__name__}: {reason}")
    return reasons


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    blocks: list[ActionBlock]  # the job block of each top-level action, repeats expanded


def expand(job: Job) -> list[ActionBlock]:
    """Top-level order of execution: ``repeat: N`` and repeat blocks opened."""
    order: list[ActionBlock] = []
    for item in job.actions:
        if isinstance(item, RepeatBlock):
            for _ in range(item.count):
                order.extend(item.actions)
        else:
            order.extend([item] * (item.params.repeat or 1) if item.kind != "submit" else [item])
    return order


def build_pipeline(job: Job, device: Device, role: str | None = None) -> BuiltPipeline:
    """Build the whole pipeline of a job (or of one role of a multinode job) on a device.

    Raises ProblemList naming every block that no strategy accepts.
    """
    _load_actions()
    problems: list[str] = []
    if job.header.device_type and job.header.device_type != device.device_type:
        problems.append(f"device_type: the job asks for {job.header.device_type!r} but the device "
                        f"is a {device.device_type!r}")
    _check_named_timeouts(job, problems)
    top = Pipeline()
    blocks = []
    order = [block for block in expand(job)
             if role is None or block.kind == "submit" or role in block.roles]
    for position, block in enumerate(order):
        chosen = select(block, device)
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
    return BuiltPipeline(top, blocks)


def _check_named_timeouts(job: Job, problems: list[str]) -> None:
    def check(table: dict[str, Any] | None, place: str) -> None:
        for name in table or {}:
            if name not in ACTION_NAMES:
                problems.append(f"{place}.{name}: no action is named {name!r} (see `lava-dispatch validate` "
                                "for the names in a pipeline)")

    check(job.header.timeouts.actions, "timeouts.actions")
    check(job.header.timeouts.connections, "timeouts.connections")
    for block in job.flat_actions():
        if block.kind != "submit":
            check(block.params.timeouts, f"{block.place}.timeouts")


def assign_timeouts(top: Pipeline, blocks: list[ActionBlock], job: Job, device: Device) -> None:
    """Give every action its effective timeout and, if it uses a connection, its connection timeout."""
    jt, dt = job.header.timeouts, device.timeouts
    for action, block in zip(top.actions, blocks):
        params = block.params
        sources = TimeoutSources(
            device_action=dt.action,
            job_action=jt.action,
            device_named=dt.actions,
            job_named=jt.actions,
            block_kind_default=getattr(jt, block.kind, None),
            block=getattr(params, "timeout", None),
            block_named=getattr(params, "timeouts", None),
        )
        for each in action.walk():
            each.timeout, each.timeout_source = sources.effective(each.names)
            if each.uses_connection:
                each.connection_timeout = connection_timeout(each.names, dt.connection, jt.connection,
                                                             dt.connections, jt.connections)
