"""The device's commands: power (on, off, hard reset) and the worker's prepare/destroy.

A device gives each as one command or a list of them (``commands:`` in the
device configuration). The engine runs them inside a job, logged and as
helpers of the job (``run_power``); a board's worker runs them outside any
job (at its start and end, and to power a board off after a crash) from
the same list (``device_commands``).
"""

from __future__ import annotations

from typing import Literal

from pipeline.context import JobContext
from pipeline.device import Device
from pipeline.processes import run_command

DeviceCommand = Literal["connect", "power_on", "power_off", "hard_reset", "soft_reset", "prepare", "destroy"]


def device_commands(device: Device, which: str) -> list[str]:
    """The commands the device gives for ``which`` (a key of its ``commands``; none: an empty list)."""
    value: str | list[str] | None = getattr(device.commands, which)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def run_power(ctx: JobContext, which: DeviceCommand, timeout: float) -> bool:
    """Run the device's power command ``which`` for this job; False if the device has none."""
    commands = device_commands(ctx.device, which)
    for command in commands:
        command = ctx.device_command(command)
        ctx.logger.info(f"{which}: {command}")
        run_command(["/bin/sh", "-c", command], timeout, which, registry=ctx.processes)
    return bool(commands)
