"""The console and power of a board the dispatcher does not start itself (bootloader and minimal boots)."""

from __future__ import annotations

import pexpect

from pipeline.action import Action
from pipeline.connection import ShellConnection
from pipeline.context import JobContext
from pipeline.device import Device
from pipeline.errors import ConfigurationError
from pipeline.power import device_commands, run_power
from pipeline.registry import known_action


@known_action
class ConnectDevice(Action):
    name = "connect-device"
    description = "open the board's console with the device's connect command"
    summary = "console"

    def run(self, ctx: JobContext) -> None:
        connect_console(ctx)


def connect_console(ctx: JobContext) -> None:
    """Open the board's console unless it is open: a console that closed is opened again."""
    if ctx.connection is not None and ctx.connection.alive():
        ctx.logger.info("console already connected")
        return
    ctx.close_connection()
    command = ctx.device.commands.connect
    if not command:
        raise ConfigurationError("the device has no commands.connect")
    ctx.board_root().mkdir(parents=True, exist_ok=True)
    command = ctx.device_command(command)
    ctx.logger.info(f"connect: {command}")
    ctx.connection = ShellConnection(["/bin/sh", "-c", command], ctx, "console", cwd=str(ctx.board_root()))


def discard_pending_output(ctx: JobContext) -> None:
    """Forget what the console printed before a power cycle: a stale prompt must not match later."""
    connection = ctx.connection
    if connection is None or not connection.alive():
        return
    try:
        while True:
            connection.child.read_nonblocking(65536, timeout=0)
    except (pexpect.TIMEOUT, pexpect.EOF, OSError):
        pass
    connection.discard()


@known_action
class PduReboot(Action):
    name = "pdu-reboot"
    description = "power-cycle the board with the device's commands (hard_reset, or power_off then power_on)"
    summary = "power-cycle"

    def run(self, ctx: JobContext) -> None:
        if run_power(ctx, "hard_reset", ctx.remaining()):
            return
        run_power(ctx, "power_off", ctx.remaining())
        if not run_power(ctx, "power_on", ctx.remaining()):
            raise ConfigurationError("the device has neither hard_reset nor power_on commands")


@known_action
class SendRebootCommands(Action):
    name = "send-reboot-commands"
    description = "reboot a board without power control by commands on its console (the boot's soft_reboot)"
    summary = "soft reboot"

    def __init__(self, commands: list[str]):
        super().__init__()
        self.commands = commands

    def run(self, ctx: JobContext) -> None:
        connection = ctx.require_connection()
        for command in self.commands:
            connection.sendline(command)


def can_power_cycle(device: Device) -> bool:
    return bool(device_commands(device, "hard_reset") or device_commands(device, "power_on"))


@known_action
class ResetDevice(Action):
    name = "reset-device"
    description = "reset the board: power-cycle it"
    summary = "reset the board"

    def __init__(self, discard_output: bool = False, reconnect: bool = False, soft_reboot: list[str] | None = None):
        super().__init__()
        self.discard_output = discard_output  # a stale bootloader prompt must not match after the reset
        self.reconnect = reconnect  # a retry's attempt opens the console again if it closed
        # As LAVA: a board without power commands is rebooted from its console.
        self.internal(SendRebootCommands(soft_reboot) if soft_reboot else PduReboot())

    def run(self, ctx: JobContext) -> None:
        if self.reconnect:
            connect_console(ctx)
        if self.discard_output:
            discard_pending_output(ctx)
        super().run(ctx)
