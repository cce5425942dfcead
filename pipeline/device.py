"""The board's device configuration (LAVA's rendered device dictionary format).

What the device fixes (the QEMU command line, bootloader commands, power
commands) cannot be changed by a job; a job only chooses among what the
device offers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.job import Duration, ProblemList, SafeName, _errors, load_yaml
from pipeline.schema import Field, Model, ValidationError


class Loose(Model, extra="allow"):
    """Device dictionaries carry many keys for other tools: keep them."""


class DeviceCommands(Loose):
    connect: str | None = None
    power_on: str | list[str] | None = None
    power_off: str | list[str] | None = None
    hard_reset: str | list[str] | None = None
    soft_reset: str | list[str] | None = None
    prepare: str | list[str] | None = None  # run once when a worker starts (e.g. start a board's QEMU)
    destroy: str | list[str] | None = None  # run when the worker stops


class DeviceTimeouts(Loose):
    action: Duration | None = None
    connection: Duration | None = None
    actions: dict[str, Duration] = {}
    connections: dict[str, Duration] = {}


class MethodTable(Loose):
    methods: dict[str, Any] = {}


class DeviceActions(Loose):
    deploy: MethodTable = MethodTable()
    boot: MethodTable = MethodTable()


class Device(Loose):
    device_type: SafeName
    hostname: str | None = None
    tags: list[str] = []
    commands: DeviceCommands = DeviceCommands()
    constants: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    timeouts: DeviceTimeouts = DeviceTimeouts()
    actions: DeviceActions = DeviceActions()
    environment: dict[str, str] = Field({}, description="extra environment for helper commands")

    @property
    def deploy_methods(self) -> dict[str, Any]:
        return self.actions.deploy.methods or {}

    @property
    def boot_methods(self) -> dict[str, Any]:
        return self.actions.boot.methods or {}

    def boot_method(self, method: str) -> dict[str, Any]:
        return self.boot_methods.get(method) or {}

    def shell_prompts(self) -> list[str]:
        return list(self.constants.get("shell-prompts") or [])


def parse_device(text: str, source: str = "device", **render: Any) -> Device:
    """A device file: plain YAML, or a LAVA device dictionary (jinja2), rendered with ``render``'s
    ``job_context``, ``device_types`` and ``dispatcher`` (see pipeline.device_dict)."""
    from pipeline.device_dict import is_device_dictionary, load_device_dictionary

    if is_device_dictionary(text):
        return load_device_dictionary(text, name=Path(source).stem, source=source, **render)
    data = load_yaml(text, "device")
    if not isinstance(data, dict):
        raise ProblemList([f"{source}: the device configuration must be a YAML mapping"])
    try:
        return Device.model_validate(data)
    except ValidationError as exc:
        raise ProblemList(_errors(exc, f"{source}:")) from None


def load_device(path: str | Path, **render: Any) -> Device:
    path = Path(path)
    return parse_device(path.read_text(), path.name, **render)
