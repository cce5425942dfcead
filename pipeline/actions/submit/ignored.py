"""The ``submit`` block: accepted so that jobs load, logged as ignored (as the specification says)."""

from __future__ import annotations

from pipeline.action import Action
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.registry import block_model, known_action, strategy
from pipeline.schema import Model
from pipeline.strategy import BuildPlan, Strategy


@block_model("submit")
class SubmitBlock(Model, extra="allow"):
    """Accepted as written: submit is ignored."""


@known_action
class SubmitIgnored(Action):
    name = "submit-results"
    description = "pipeline data cannot be submitted yet: the submit action is ignored"
    summary = "submit (ignored)"

    def run(self, ctx: JobContext) -> None:
        ctx.logger.warning("submit is accepted but ignored: pipeline data cannot be submitted")


@strategy("submit")
class Submit(Strategy):
    model, other_model = SubmitBlock, "not a submit block"

    @classmethod
    def make(cls, params: SubmitBlock, block: ActionBlock, plan: BuildPlan) -> Action:
        return SubmitIgnored(params)
