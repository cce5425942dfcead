"""LAVA device dictionaries: a device file that is a jinja2 template over device-type templates.

A dictionary names the template of its device type and sets the variables
that make this board what it is::

    {% extends 'beaglebone-black.jinja2' %}
    {% set connection_command = 'telnet ser2net01 7001' %}
    {% set power_on_command = 'pduclient --daemon pdu01 --port 5 --command on' %}

Rendering it gives the device configuration (YAML), which then loads as any
device file does. As in LAVA, the job's ``context:`` mapping is passed to the
templates (so a job may choose ``arch``, ``memory``, ``extra_options``...
where the template lets it), and so are ``scheduled_device_name`` (the
board) and ``scheduled_device_type`` (the template the dictionary extends).
Here the worker's dispatcher configuration is also passed, below the job's
context. A dictionary's own ``{% set %}`` wins over all of them.

LAVA's rendered devices carry no ``device_type`` key (LAVA knows the type
from its database): when the rendered YAML has none, it is the name of the
template the dictionary extends (``beaglebone-black``). ``hostname``, when
missing, is the board's name.

The templates are looked up in the device-types path: the directories of
``--device-types`` (repeatable, or a ``:``-separated list) or else of
``$LAVA_DISPATCH_DEVICE_TYPES``, then the defaults: the project's own
templates, then LAVA's (``/etc/lava-server/dispatcher-config/device-types``,
``/usr/share/lava-server/device-types``). The first directory holding a name
wins, so a lab's directory overrides the project's templates, and the
project's ``qemu.jinja2``, ``kvm.jinja2``, ``beaglebone-black.jinja2`` and
``panda.jinja2`` (which produce devices this dispatcher runs) stand before
LAVA's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import yamlload
from pipeline.dispatcher_config import DispatcherConfig
from pipeline.errors import ProblemList, RenderError, YamlRejected

ENV_VAR = "LAVA_DISPATCH_DEVICE_TYPES"
PROJECT_TEMPLATES = Path(__file__).resolve().parent / "device_types"
LAVA_TEMPLATE_DIRS = (Path("/etc/lava-server/dispatcher-config/device-types"),
                      Path("/usr/share/lava-server/device-types"))

# The context variables a LAVA job may set (lava_common's schema); a worker adds
# its own with the dispatcher configuration's ``extra_context_variables``.
CONTEXT_VARIABLES = frozenset("""
    arch boot_console boot_root cpu extra_options guestfs_driveid guestfs_interface guestfs_size
    machine memory model monitor netdevice no_kvm no_network serial vga
    booti_dtb_addr booti_kernel_addr booti_ramdisk_addr bootm_dtb_addr bootm_kernel_addr
    bootm_ramdisk_addr bootz_dtb_addr bootz_kernel_addr bootz_ramdisk_addr
    deploy_character_delay boot_character_delay boot_retry bootloader_prompt console_device
    custom_kernel_args extra_kernel_args extra_nfsroot_args failure_retry kernel_loglevel
    kernel_start_message lava_test_results_dir menu_interrupt_prompt mustang_menu_list
    test_character_delay tftp_mac_address uboot_extra_error_message uboot_needs_interrupt uboot_altbank
""".split())

_JINJA = re.compile(r"\{%[-+]?\s*(?:extends|set|if|for|block|include|import|from|macro)\b|\{\{")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_device_dictionary(text: str) -> bool:
    """True when the device file is a jinja2 template (``{% extends``, ``{% set``, ``{{``...), not plain YAML."""
    return _JINJA.search(text) is not None


def device_types_path(dirs: Sequence[str | Path] | None = None,
                      environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The directories searched for device-type templates, in order.

    ``dirs`` (each may be a ``:``-separated list) or else
    ``$LAVA_DISPATCH_DEVICE_TYPES``, then the project's templates and LAVA's.
    """
    environ = os.environ if environ is None else environ
    given: list[str] = []
    for item in (dirs if dirs else [environ.get(ENV_VAR, "")]):
        given.extend(part for part in str(item).split(os.pathsep) if part)
    found: list[Path] = []
    for path in [Path(p).expanduser() for p in given] + [PROJECT_TEMPLATES, *LAVA_TEMPLATE_DIRS]:
        path = path.resolve() if path.exists() else path.absolute()
        if path not in found:
            found.append(path)
    return tuple(found)


def check_job_context(context: Mapping[str, Any] | None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The job's context as template variables; ProblemList naming each key LAVA would refuse.

    As in LAVA, a job may only set the known context variables, each a
    number (or boolean), a string or a list of them. A value may not hold a line break or
    another control character: it would change the structure of the rendered
    YAML (a job could then give the board commands of its own).
    """
    if not context:
        return {}
    if not isinstance(context, Mapping):
        raise ProblemList(["context: must be a mapping of variable names to values"])
    allowed = CONTEXT_VARIABLES | set(extra)
    problems = []
    for key, value in context.items():
        if key not in allowed:
            problems.append(f"context.{key}: not a context variable a job may set on this device "
                            f"(LAVA's are {', '.join(sorted(CONTEXT_VARIABLES))}; a worker adds more with "
                            f"extra_context_variables in its dispatcher configuration)")
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, (int, float, str)):  # bool is an int, as in LAVA (no_kvm: true)
                problems.append(f"context.{key}: must be a number, a string or a list of them")
                break
            if isinstance(item, str) and _CONTROL.search(item):
                problems.append(f"context.{key}: must be one line (no line breaks or control characters)")
                break
    if problems:
        raise ProblemList(problems)
    return dict(context)


def render_device_dictionary(text: str, *, name: str = "device", source: str | None = None,
                             job_context: Mapping[str, Any] | None = None,
                             device_types: Sequence[str | Path] | None = None,
                             dispatcher: DispatcherConfig | None = None) -> str:
    """Render a device dictionary with the job's context; the device configuration as YAML text.

    ``name`` is the board's (``scheduled_device_name``); ``source`` names the
    dictionary in messages (default ``name``). Raises ProblemList.
    """
    return _render(text, name, source or name, job_context, device_types, dispatcher)[0]


def rendered_device_data(text: str, *, name: str = "device", source: str | None = None,
                         job_context: Mapping[str, Any] | None = None,
                         device_types: Sequence[str | Path] | None = None,
                         dispatcher: DispatcherConfig | None = None,
                         job_device_type: str | None = None) -> dict[str, Any]:
    """The rendered dictionary as a mapping, with its device_type and hostname (pipeline.device checks it).

    Without a ``device_type`` key the device is of the job's type (``job_device_type``:
    lava-run takes the server's word for it), else of the template the dictionary extends.
    """
    source = source or name
    rendered, device_type = _render(text, name, source, job_context, device_types, dispatcher)
    data = load_rendered_yaml(rendered, source)
    device_type = job_device_type or device_type
    if device_type and "device_type" not in data:
        data["device_type"] = device_type
    # How the board reaches this worker's file server: the dispatcher configuration's, where LAVA's
    # templates (which leave it to the dispatcher) give none.
    address = (dispatcher if dispatcher is not None else DispatcherConfig.from_env()).ip_for("http")
    parameters = data.setdefault("parameters", {})
    if address and isinstance(parameters, dict) and "dispatcher_ip" not in parameters:
        parameters["dispatcher_ip"] = address
    data.setdefault("hostname", name)
    return data


def load_rendered_yaml(rendered: str, source: str) -> dict[str, Any]:
    """The rendered text as a mapping, through the same bounded loader as a device file.

    LAVA's own templates render some keys twice (the last one counts, as in LAVA)."""
    limits = yamlload.Limits(max_bytes=yamlload.max_bytes_from_env(), allow_duplicate_keys=True)
    try:
        data = yamlload.load(rendered, "device", f"{source} (rendered): ", limits)
    except YamlRejected as exc:
        raise ProblemList(exc.problems) from None
    if not isinstance(data, dict):
        raise ProblemList([f"{source} (rendered): the device configuration must be a YAML mapping"])
    return data


def _render(text: str, name: str, source: str, job_context: Mapping[str, Any] | None,
            device_types: Sequence[str | Path] | None,
            dispatcher: DispatcherConfig | None) -> tuple[str, str | None]:
    from pipeline.device_templates import environment, extends_target, render

    dispatcher = DispatcherConfig.from_env() if dispatcher is None else dispatcher
    context = check_job_context(job_context, dispatcher.extra_context_variables)
    search_path = device_types_path(device_types)
    try:
        extends = extends_target(environment(search_path), text, source)
        device_type = Path(extends).name.rsplit(".", 1)[0] if extends else None
        variables = {**dispatcher.template_variables(), **context, "scheduled_device_name": name}
        if device_type:
            variables["scheduled_device_type"] = device_type
        return render(text, variables, search_path=search_path, source=source), device_type
    except RenderError as exc:
        raise ProblemList(exc.problems) from None
