"""``boot: {method: minimal}``: connect to a board that is up already (a power cycle only if asked).

A board that is a local shell on the dispatcher (``parameters.overlay:
local``) gets the overlay unpacked into its directory when no deploy
prepared one.
"""

from __future__ import annotations

from typing import Literal

from pipeline.action import Action
from pipeline.actions.common.console import ConnectDevice, ResetDevice
from pipeline.actions.common.overlay import ApplyOverlayLocal, overlay_action
from pipeline.actions.common.shell import BootBase, shell_steps
from pipeline.blocks import ActionBlock
from pipeline.errors import ProblemList
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("boot", "minimal")
class BootMinimal(BootBase):
    method: Literal["minimal"]
    reset: bool = False


@known_action
class MinimalBootAction(Action):
    name = "minimal-boot"
    description = "connect to the board without a power cycle (unless reset is asked)"
    summary = "minimal boot"


@strategy("boot", priority=5)
class MinimalBoot(Strategy):
    model, other_model, method = BootMinimal, "method is not minimal", ("boot", "minimal")

    @classmethod
    def make(cls, params: BootMinimal, block: ActionBlock, plan: BuildPlan) -> Action:
        steps: list[Action] = []
        local = plan.device.boot_parameters("minimal").get("overlay") == "local"
        if not plan.before("boot") and not plan.deployed_before():
            lava_overlay = overlay_action(plan.stages_after(until_deploy=False), None)
            if lava_overlay is not None:
                if not local:
                    raise ProblemList([f"{block.place}: the tests need a deploy before this boot "
                                       "(this device cannot receive the overlay otherwise)"])
                steps += [lava_overlay, ApplyOverlayLocal()]
        steps.append(ConnectDevice())
        if params.reset:
            steps.append(ResetDevice())
        steps += shell_steps(params)
        top = MinimalBootAction(params)
        top.internal(*steps)
        return top
