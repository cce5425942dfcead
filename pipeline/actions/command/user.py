"""``command: {name: ...}``: run on the dispatcher a command the device lists, LAVA's ``user-command``.

A job cannot give a command line: it names one of the device's
``commands.users`` (``{name: {do: ..., undo: ...}}``, each a command or a
list of them), or one of the device's own commands that LAVA lets a job
call by name (``power_on``, ``hard_reset``, ...). ``do`` runs when the
action runs, each command split with shell rules and run without a shell,
within the action's timeout, its output logged; a command that fails or
times out fails the job as an infrastructure error. ``undo``, if any, runs
when the job is cleaned up, and only if ``do`` ran.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from pipeline.action import Action
from pipeline.blocks import ActionBase, ActionBlock
from pipeline.context import JobContext
from pipeline.device import Device
from pipeline.errors import Bug, InfrastructureError
from pipeline.fields import SafeName
from pipeline.processes import run_command
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy

# The device's own commands a job may name (LAVA's built-in commands that this dispatcher's devices carry).
BUILTIN = ("pre_power_command", "pre_os_command", "hard_reset", "power_on", "power_off", "recovery_mode",
           "recovery_exit")
UNSUPPORTED = {"usbg_ms_commands_disable": "the usbg-ms deploy method is not supported by this dispatcher",
               "stop_test_services": "test services are not supported by this dispatcher"}
MAX_LOGGED_LINES = 200  # of one command's output


@block_model("command")
class CommandBlock(ActionBase):
    name: SafeName


def _commands(value: Any) -> list[str] | None:
    """A command or a non-empty list of non-empty commands as a list; None for anything else."""
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, list) and value and all(isinstance(item, str) and item.strip() for item in value):
        return list(value)
    return None


def device_command(device: Device, name: str) -> tuple[dict[str, list[str]] | None, str]:
    """The ``do`` (and ``undo``) commands the device gives for ``name``, or None and why not."""
    if name in UNSUPPORTED:
        return None, UNSUPPORTED[name]
    commands = device.commands.model_dump()
    if name in BUILTIN:
        do = _commands(commands.get(name))
        return ({"do": do}, "") if do else (None, f"command {name!r} is not defined for this device")
    users = commands.get("users")
    if not isinstance(users, dict) or not users:
        return None, "the device has no user commands (commands.users)"
    entry = users.get(name)
    if entry is None:
        return None, f"unknown user command {name!r} (the device's: {', '.join(sorted(map(str, users)))})"
    found: dict[str, list[str]] = {}
    for key in ("do", "undo"):
        if key in entry or key == "do":
            listed = _commands(entry.get(key)) if isinstance(entry, dict) else None
            if listed is None:
                return None, (f"user command {name!r} is invalid: 'do' and 'undo' are non-empty strings or "
                              "non-empty lists of non-empty strings")
            found[key] = listed
    return found, ""


@known_action
class CommandAction(Action):
    name = "user-command"
    description = "execute one of the commands listed by the admin"
    summary = "execute commands"

    def __init__(self, params: CommandBlock, commands: dict[str, list[str]]):
        super().__init__(params)
        self.command_name = params.name
        self.commands = commands
        self.ran = False

    def run(self, ctx: JobContext) -> None:
        ctx.logger.info(f"Running user command {self.command_name!r}")
        self.ran = True
        self._run_all(ctx, self.commands["do"], ctx.remaining)

    def cleanup(self, ctx: JobContext) -> None:
        if not self.ran:
            ctx.logger.debug(f"Skipping {self.name} 'undo' as 'do' was not called")
            return
        if "undo" in self.commands:
            ctx.logger.info(f"Running cleanup for user command {self.command_name!r}")
            end = time.monotonic() + self.timeout  # the job's deadline has passed, perhaps: the action's own
            self._run_all(ctx, self.commands["undo"], lambda: end - time.monotonic())

    def _run_all(self, ctx: JobContext, commands: list[str], remaining: Any) -> None:
        for command in commands:
            argv = shlex.split(ctx.device_command(command))
            ctx.logger.debug(f"Calling: {argv!r}")
            started = time.monotonic()
            try:
                output = run_command(argv, remaining(), self.name, registry=ctx.processes)
            except FileNotFoundError as exc:
                raise InfrastructureError(f"{self.name}: unable to run {argv[0]!r}: {exc.strerror}") from None
            for line in output.splitlines()[-MAX_LOGGED_LINES:]:
                ctx.logger.info(f">> {line}")
            ctx.logger.debug(f"Returned 0 in {time.monotonic() - started:.0f} seconds")


@strategy("command")
class UserCommand(Strategy):
    model, other_model = CommandBlock, "not a command block"

    @classmethod
    def device_accepts(cls, device: Device, params: CommandBlock) -> tuple[bool, str]:
        commands, reason = device_command(device, params.name)
        return commands is not None, reason

    @classmethod
    def make(cls, params: CommandBlock, block: ActionBlock, plan: BuildPlan) -> Action:
        commands, reason = device_command(plan.device, params.name)
        if commands is None:  # accepts() said yes on this device
            raise Bug(f"{block.place}: {reason}")
        return CommandAction(params, commands)
