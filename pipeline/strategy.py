"""What a method's strategy is, and what it may look at while it builds: Strategy, BuildPlan.

A strategy (registered with ``pipeline.registry.strategy``) says whether it
accepts a block on a device, with a reason when it does not (the user sees
every strategy's reason when none accepts), and builds the block's
top-level action. BuildPlan is the whole job in execution order, for a
strategy whose actions depend on the blocks around it (the test stages a
deploy prepares, the Deployment a boot boots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pipeline.action import Action
from pipeline.blocks import ActionBlock
from pipeline.deployment import Deployment
from pipeline.device import Device
from pipeline.errors import Bug
from pipeline.job import Job

P = TypeVar("P")


class Strategy:
    """Chooses and builds the action for one kind of block.

    A method's strategy names its block ``model`` (and the reason given when a
    block is another model), the device ``method`` it needs (kind and name,
    None when any device will do), may add checks in ``device_accepts`` and
    builds its action in ``make``.
    """

    kind: ClassVar[str] = ""  # deploy, boot, test, command, submit
    priority: ClassVar[int] = 0
    model: ClassVar[type] = object
    other_model: ClassVar[str] = ""  # the reason when the block is not ``model``
    method: ClassVar[tuple[str, str] | None] = None  # ("boot", "qemu"): the device must offer it

    @classmethod
    def accepts(cls, device: Device, params: object) -> tuple[bool, str]:
        if not isinstance(params, cls.model):
            return False, cls.other_model
        if cls.method is not None:
            ok, reason = device.offers(*cls.method)
            if not ok:
                return ok, reason
        return cls.device_accepts(device, params)

    @classmethod
    def device_accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        """Checks beyond the model and the method (u-boot's command sets, a media node, ...)."""
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        return cls.make(params_of(block, cls.model), block, plan)

    @classmethod
    def make(cls, params: Any, block: ActionBlock, plan: BuildPlan) -> Action:
        """The block's top-level action from its parameters (already the strategy's model)."""
        raise NotImplementedError


def params_of(block: ActionBlock, model: type[P]) -> P:
    """The block's parameters as the model its strategy accepted."""
    if not isinstance(block.params, model):
        raise Bug(f"{block.place}: a {model.__name__} strategy was given a {type(block.params).__name__}")
    return block.params


@dataclass
class BuildPlan:
    """What a strategy may look at while building: the whole job in execution order."""

    job: Job
    device: Device
    order: list[ActionBlock]  # top-level blocks of this board, repeats expanded
    position: int  # index of the block being built in ``order``

    def stages_after(self, until_deploy: bool = True) -> list[tuple[int, ActionBlock]]:
        """(stage, block) of each test action after this block: up to the next deploy, or all of them."""
        found = []
        for index in range(self.position + 1, len(self.order)):
            block = self.order[index]
            if block.kind == "deploy" and until_deploy:
                break
            if block.kind == "test":
                found.append((self.stage_of(index), block))
        return found

    def stage_of(self, index: int) -> int:
        return sum(1 for block in self.order[:index] if block.kind == "test")

    def before(self, kind: str) -> bool:
        """Some block of ``kind`` comes before this one."""
        return any(block.kind == kind for block in self.order[: self.position])

    def deployed_before(self) -> bool:
        return self.before("deploy")

    def tests_after(self) -> bool:
        return any(block.kind == "test" for block in self.order[self.position + 1:])

    def deployment(self) -> Deployment | None:
        """What the last deploy before this block will hand on, as declared by its method (None: no deploy)."""
        for block in reversed(self.order[: self.position]):
            if block.kind == "deploy":
                return block.settings.deployment(block.place) if block.settings is not None else None
        return None
