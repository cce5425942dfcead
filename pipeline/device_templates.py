"""The jinja2 environment that renders device dictionaries over device-type templates.

A device dictionary (``{% extends 'beaglebone-black.jinja2' %}`` plus
``{% set ... %}`` lines) is rendered the way LAVA renders it: a sandboxed
environment, ``trim_blocks``, no autoescaping, and the lenient default
``Undefined``, since device-type templates test unset variables with
``{% if var %}`` and ``| default(...)``. The templates come from a search
path of directories (``FileSystemLoader``); a name is looked up in each
directory in turn.

What the sandbox adds here: reading an unsafe attribute (``__class__``,
``__globals__``, ...) is an error, not an empty string; ``*`` and ``**``
cannot build huge values; the rendered text is bounded. A dictionary and its
templates are written by the lab's administrators (who also write the
device's power and console commands, which the dispatcher runs): the bounds
catch mistakes, and the sandbox keeps a template from reaching Python.

Only this module imports jinja2, and only when a device dictionary is read.
"""

from __future__ import annotations

import functools
import operator
import shlex
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, TemplateError, TemplateNotFound, TemplatesNotFound, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from pipeline.errors import RenderError

MAX_RENDERED_CHARS = 1 << 20  # a rendered LAVA device is 5-30 kB
MAX_VALUE_LEN = 1 << 20  # the largest string or list ``*`` may build
MAX_POWER_BITS = 4096  # the largest integer ``**`` may build
X86_ARCHS = ("amd64", "x86_64", "i386")




def yaml_quote(value: Any) -> str:
    """``value`` as a one-line, double-quoted YAML flow value (a filter newer LAVA templates use)."""
    text = yaml.safe_dump(value, default_flow_style=True, default_style='"', width=1 << 30,
                          allow_unicode=True, explicit_start=False)
    text = text.rstrip("\n")
    return text[:-4].rstrip("\n") if text.endswith("\n...") else text


def qemu_guest_fs_interface(arch: Any, interface: Any = None) -> str:
    """The guest disk interface: the one given, else IDE on x86 PCs and virtio elsewhere."""
    if interface:
        return str(interface)
    return "ide" if arch in X86_ARCHS else "virtio"


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


class DeviceTemplateEnvironment(SandboxedEnvironment):
    """LAVA's rendering settings, in a sandbox that refuses rather than hides unsafe access."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, search_path: Iterable[Path]):
        super().__init__(loader=FileSystemLoader([str(p) for p in search_path]),
                         autoescape=False, trim_blocks=True, cache_size=400)
        self.filters["shlex_quote"] = shlex.quote
        self.filters["yaml_quote"] = yaml_quote
        self.filters["qemu_guest_fs_interface"] = qemu_guest_fs_interface

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is "
                            f"not allowed (device-type templates are rendered in a sandbox)")

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                size = _size(seq)
                if size is not None and isinstance(count, int) and size * count > MAX_VALUE_LEN:
                    raise SecurityError(f"'*' would build a value of {size * count} items "
                                        f"(at most {MAX_VALUE_LEN} in a device-type template)")
            return operator.mul(left, right)
        if (isinstance(left, int) and isinstance(right, int) and right > 0
                and max(left.bit_length(), 1) * right > MAX_POWER_BITS):
            raise SecurityError(f"'**' would build a number of more than {MAX_POWER_BITS} bits "
                                "(too large for a device-type template)")
        return operator.pow(left, right)


@functools.lru_cache(maxsize=16)
def environment(search_path: tuple[Path, ...]) -> DeviceTemplateEnvironment:
    """One environment per search path (it caches the templates it compiled)."""
    return DeviceTemplateEnvironment(search_path)


def extends_target(env: SandboxedEnvironment, text: str, source: str) -> str | None:
    """The template the dictionary extends (``'qemu.jinja2'``), when it names one literally."""
    try:
        tree = env.parse(text, name=source)
    except TemplateSyntaxError as exc:
        raise RenderError([_syntax_problem(exc, source)]) from None
    for node in tree.find_all(nodes.Extends):
        if isinstance(node.template, nodes.Const) and isinstance(node.template.value, str):
            return node.template.value
    return None


def render(text: str, variables: dict[str, Any], *, search_path: tuple[Path, ...], source: str) -> str:
    """Render the dictionary ``text``; the rendered YAML text, or RenderError."""
    env = environment(search_path)
    try:
        template = env.from_string(text)
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise RenderError([f"{source}: the rendered device configuration is larger than "
                                   f"{MAX_RENDERED_CHARS} characters"])
            chunks.append(chunk)
        return "".join(chunks)
    except RenderError:
        raise
    except (TemplateNotFound, TemplatesNotFound) as exc:
        names = exc.templates if isinstance(exc, TemplatesNotFound) else [exc.name]
        wanted = ", ".join(repr(str(n)) for n in names)
        dirs = ", ".join(str(p) for p in search_path) or "(no directories)"
        raise RenderError([f"{source}: device-type template {wanted} not found in the device-types "
                           f"path: {dirs}"]) from None
    except TemplateSyntaxError as exc:
        raise RenderError([_syntax_problem(exc, source)]) from None
    except (TemplateError, SecurityError, ArithmeticError, TypeError, ValueError, AttributeError, KeyError,
            IndexError, RecursionError) as exc:
        raise RenderError([f"{_where(exc, source)}: {_describe(exc)}"]) from None


def _syntax_problem(exc: TemplateSyntaxError, source: str) -> str:
    name = exc.filename or exc.name
    where = source if name in (None, source, "<template>") else Path(str(name)).name
    return f"{where} line {exc.lineno}: template syntax error: {exc.message}"


def _where(exc: BaseException, source: str) -> str:
    """The template file and line an error was raised at (jinja2 rewrites tracebacks to template lines)."""
    place = source
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            place = f"{source} line {frame.lineno}"
        elif frame.filename.endswith(".jinja2") or frame.filename.endswith(".jinja"):
            place = f"{Path(frame.filename).name} line {frame.lineno}"
    return place


def _describe(exc: BaseException) -> str:
    kind = {"UndefinedError": "undefined value"}.get(type(exc).__name__)
    message = str(exc) or type(exc).__name__
    if isinstance(exc, (ArithmeticError, TypeError, ValueError, KeyError, IndexError, AttributeError)):
        kind = type(exc).__name__
    if isinstance(exc, RecursionError):
        return "the templates recurse too deeply"
    return f"{kind}: {message}" if kind else message
