"""The board's device configuration (LAVA's rendered device dictionary format).

What the device fixes (the QEMU command line, bootloader commands, power
commands) cannot be changed by a job; a job only chooses among what the
device offers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks import key_text, regex_problem, shell_name_problem, shown
from pipeline.errors import ConfigurationError, ProblemList, ValidationError
from pipeline.fields import Duration, Field, SafeName, load_yaml, problem_lines
from pipeline.schema import Model

if TYPE_CHECKING:
    from pipeline.dispatcher_config import DispatcherConfig


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
    actions: dict[SafeName, Duration] = {}
    connections: dict[SafeName, Duration] = {}


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

    def boot_parameters(self, method: str) -> dict[str, Any]:
        """The ``parameters`` of a boot method (the QEMU command line, the bootloader's prompts, ...)."""
        return dict(self.boot_method(method).get("parameters") or {})

    def deploy_parameters(self, method: str) -> dict[str, Any]:
        """The ``parameters`` of a deploy method (tftp_root, a media's device_node, ...)."""
        return dict((self.deploy_methods.get(method) or {}).get("parameters") or {})

    def offers(self, kind: str, method: str) -> tuple[bool, str]:
        """Whether the device has the deploy or boot ``method``, and if not, a strategy's reason."""
        methods = self.deploy_methods if kind == "deploy" else self.boot_methods
        if method in methods:
            return True, ""
        offered = ", ".join(sorted(methods)) or "none"
        return False, f"device type {self.device_type!r} offers {kind} methods {offered}, not {method!r}"

    def shell_prompts(self) -> list[str]:
        return list(self.constants.get("shell-prompts") or [])

    def tftp_root(self) -> Path:
        """The TFTP server's tree, where each job gets a directory of its own."""
        root = self.deploy_parameters("tftp").get("tftp_root") or self.parameters.get("tftp_root")
        if not root:
            raise ConfigurationError("the device has no tftp_root (actions.deploy.methods.tftp.parameters.tftp_root)")
        return Path(str(root))

    def nfs_export_root(self, method: str = "tftp") -> Path:
        """The tree the NFS server exports, where each job unpacks its NFS root (``method``: tftp or nfs)."""
        root = self.deploy_parameters(method).get("nfs_root") or self.parameters.get("nfs_root")
        if not root:
            raise ConfigurationError("the device has no nfs_root for NFS exports "
                                     "(actions.deploy.methods.tftp.parameters.nfs_root)")
        return Path(str(root))

    def nfs_export_path(self, nfs_root: Path, method: str = "tftp") -> str:
        """``nfs_root`` (inside the export) as the board mounts it: the server may export it under a prefix."""
        export = self.nfs_export_root(method)
        prefix = str(self.parameters.get("nfs_export_prefix", export))
        return f"{prefix.rstrip('/')}/{nfs_root.relative_to(export)}"


def parse_device(text: str, source: str = "device", **render: Any) -> Device:
    """A device file: plain YAML, or a LAVA device dictionary (jinja2), rendered with ``render``'s
    ``job_context``, ``device_types`` and ``dispatcher`` (see pipeline.device_dict)."""
    from pipeline.device_dict import is_device_dictionary

    if is_device_dictionary(text):
        return load_device_dictionary(text, name=Path(source).stem, source=source, **render)
    data = load_yaml(text, "device", f"{source}: ")
    if not isinstance(data, dict):
        raise ProblemList([f"{source}: the device configuration must be a YAML mapping"])
    if "device_type" not in data and render.get("job_device_type"):
        data["device_type"] = render["job_device_type"]  # a device LAVA rendered: of the job's type
    try:
        device = Device.model_validate(data)
    except ValidationError as exc:
        raise ProblemList([f"{source}: {problem}" for problem in problem_lines(exc, "")]) from None
    problems = device_problems(device)
    if problems:
        raise ProblemList([f"{source}: {problem}" for problem in problems])
    return device


def load_device(path: str | Path, **render: Any) -> Device:
    path = Path(path)
    return parse_device(path.read_text(), path.name, **render)


def load_device_dictionary(text: str, *, name: str = "device", source: str | None = None,
                           job_context: Mapping[str, Any] | None = None,
                           device_types: Sequence[str | Path] | None = None,
                           dispatcher: DispatcherConfig | None = None,
                           job_device_type: str | None = None) -> Device:
    """Render a device dictionary (see ``pipeline.device_dict.render_device_dictionary``) and load the
    result as a Device."""
    from pipeline.device_dict import rendered_device_data

    source = source or name
    data = rendered_device_data(text, name=name, source=source, job_context=job_context,
                                device_types=device_types, dispatcher=dispatcher, job_device_type=job_device_type)
    try:
        return Device.model_validate(data)
    except ValidationError as exc:
        raise ProblemList(problem_lines(exc, f"{source}:")) from None


def device_config_text(text: str, *, name: str = "device", source: str | None = None,
                       job_context: Mapping[str, Any] | None = None,
                       device_types: Sequence[str | Path] | None = None,
                       dispatcher: DispatcherConfig | None = None) -> str:
    """The device configuration as YAML text: ``text`` itself when it is plain YAML, else the dictionary
    rendered and checked as a device, with its device_type and hostname.

    For a worker to register what its board is, so that no other host needs the templates.
    """
    from pipeline.device_dict import is_device_dictionary, rendered_device_data

    if not is_device_dictionary(text):
        return text
    import yaml

    source = source or name
    data = rendered_device_data(text, name=name, source=source, job_context=job_context,
                                device_types=device_types, dispatcher=dispatcher)
    try:
        Device.model_validate(data)
    except ValidationError as exc:
        raise ProblemList(problem_lines(exc, f"{source}:")) from None
    return yaml.safe_dump(data, sort_keys=False, width=120)


def device_problems(device: Device) -> list[str]:
    """What the loose model keeps but the actions read as a given shape, checked before any job uses it."""
    problems: list[str] = []
    for kind, methods in (("deploy", device.deploy_methods), ("boot", device.boot_methods)):
        for name, method in methods.items():
            place = f"actions.{kind}.methods.{key_text(name)}"
            if method is None:
                continue
            if not isinstance(method, dict):
                problems.append(f"{place}: expected a mapping (parameters, command sets), got {shown(method)}")
                continue
            if not isinstance(method.get("parameters") or {}, dict):
                problems.append(f"{place}.parameters: expected a mapping, got {shown(method['parameters'])}")
            for key, entry in method.items():  # u-boot's command sets: {nfs: {commands: [...]}}
                if isinstance(entry, dict) and "commands" in entry and not _strings(entry["commands"]):
                    problems.append(f"{place}.{key_text(key)}.commands: expected a list of commands (strings)")
    for key in ("shell-prompts", "failure-messages"):
        value = device.constants.get(key)
        if value is not None and not _strings(value):
            problems.append(f"constants.{key}: expected a list of strings, got {shown(value)}")
    prompts = device.constants.get("shell-prompts")
    for index, prompt in enumerate(prompts if isinstance(prompts, list) else []):
        problem = regex_problem(prompt) if isinstance(prompt, str) else None
        if problem:
            problems.append(f"constants.shell-prompts[{index}]: {problem}")
    for key in ("bootz", "bootm", "booti"):
        if not isinstance(device.parameters.get(key) or {}, dict):
            problems.append(f"parameters.{key}: expected a mapping of load addresses (kernel, ramdisk, dtb)")
    for key in device.environment:
        problem = shell_name_problem(key)
        if problem:
            problems.append(f"environment.{key_text(key)}: {problem}")
    return problems


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
