"""``finalize``: what every job ends with, whatever happened before (LAVA's last top-level action).

It is described with the pipeline (so that its timeouts can be named) but
kept out of the actions run in order: the runner runs it while it
finalizes the job, after a failure or a cancel too.
"""

from __future__ import annotations

import time

from pipeline.action import Action
from pipeline.context import JobContext
from pipeline.errors import LavaError
from pipeline.power import run_power
from pipeline.registry import finalizer, known_action

FEEDBACK_SECONDS = 1.0  # the longest the console is read for what the board printed last
FEEDBACK_QUIET = 0.01  # a console quiet this long has nothing more to say (a job does not wait FEEDBACK_SECONDS)


@known_action
class PowerOff(Action):
    name = "power-off"
    description = "power the board off, if the job powered it on"
    summary = "power off"

    def run(self, ctx: JobContext) -> None:
        powered = any(action.name == "reset-device" for action in ctx.started_actions)
        if powered and ctx.device.commands.power_off:
            run_power(ctx, "power_off", self.timeout)


@known_action
class ReadFeedback(Action):
    name = "read-feedback"
    description = "log what the board's console printed after the last action"
    summary = "read console feedback"

    def run(self, ctx: JobContext) -> None:
        connection = ctx.connection
        if connection is None or not connection.alive():
            return
        deadline = time.monotonic() + min(FEEDBACK_SECONDS, self.timeout)
        try:
            while (left := deadline - time.monotonic()) > 0:
                # What is read is logged as the board's output; a quiet console ends the read.
                connection.readline(min(left, FEEDBACK_QUIET), self.name)
        except LavaError:
            pass  # the end of the feedback (a timeout) or a console that closed


@finalizer
@known_action
class FinalizeAction(Action):
    name = "finalize"
    description = "finish the job: power the board off, read the last console output"
    summary = "finalize the job"

    def __init__(self) -> None:
        super().__init__()
        self.internal(PowerOff(), ReadFeedback())
