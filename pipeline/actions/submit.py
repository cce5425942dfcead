"""The submit action: accepted so jobs load, logged as ignored (as the specification says)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.action import Action
from pipeline.device import Device
from pipeline.job import ActionBlock, SubmitBlock
from pipeline.strategies import BuildPlan, Strategy, known_action, strategy

if TYPE_CHECKING:
    from pipeline.context import JobContext


@known_action
class SubmitIgnored(Action):
    name = "submit-results"
    description = "pipeline data cannot be submitted yet: the submit action is ignored"
    summary = "submit (ignored)"

    def run(self, ctx: JobContext) -> None:
        ctx.logger.warning("submit is accepted but ignored: pipeline data cannot be submitted")


@strategy("submit")
class Submit(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        return isinstance(params, SubmitBlock), "not a submit block"

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        return SubmitIgnored(block.params)
