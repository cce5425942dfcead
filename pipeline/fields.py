"""Field types of the job, device and dispatcher models, and how their problems become lines.

A model (pipeline.schema) names a type; the types here add the checks a
file's values need (a URL that cannot end a shell command, a name that is
safe as a path, a duration in either of its forms) and say what an editor
may write there (``input_schema``). ``validate_model`` and ``load_yaml``
turn what the model layer and the YAML loader refuse into ProblemList
lines, each naming its place (``actions[1].boot.method: ...``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pipeline.checks import as_regex, as_shell_name, shown
from pipeline.errors import ProblemList, ValidationError, YamlRejected
from pipeline.schema import BeforeValidator, Model
from pipeline.timeouts import SHORT_FORM, UNIT_SECONDS, parse_duration
from pipeline.yamlload import format_place
from pipeline.yamlload import load as load_document

OPERATING_SYSTEMS = ("android", "ubuntu", "debian", "oe")
# Characters that never appear in a URL we accept: they could end a
# bootloader or shell command and start another one.
URL_FORBIDDEN = re.compile(r"[\s;'\"`\\<>|$&(){}\x00-\x1f\x7f]")
URL_SCHEMES = ("http://", "https://", "file://")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

M = TypeVar("M", bound=Model)

if TYPE_CHECKING:
    def Field(default: Any = ..., *, alias: str | None = None, ge: float | None = None, le: float | None = None,
              pattern: str | None = None, min_length: int | None = None, max_length: int | None = None,
              description: str | None = None) -> Any:
        """pipeline.schema.Field, typed as what it stands for when it is a field's default: the field's value.

        (The model layer's Field is a class; given as ``x: int = Field(1, ge=0)`` a type checker
        would take the Field object for the int. Models import Field from here until it is typed so.)
        """
else:
    from pipeline.schema import Field


# ---------------------------------------------------------------- converters (ValueError is the problem reported)


def as_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {type(value).__name__}")
    bad = URL_FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"{shown(value, 200)}: character {bad.group()!r} is not allowed in a URL")
    if not value.startswith(URL_SCHEMES):
        raise ValueError(f"{shown(value, 200)}: only http://, https:// and file:// URLs are supported")
    if value.startswith("file://") and ".." in value[len("file://"):].split("/"):
        raise ValueError(f"{shown(value, 200)}: '..' is not allowed in a file:// path")
    return value


def as_safe_name(value: Any) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(f"{shown(value)} must be letters, digits, '.', '_', '+' or '-'")
    return value


def as_list(value: Any) -> Any:
    """One string stands for a list of one (``role: server``, ``prompts: '# '``)."""
    return [value] if isinstance(value, str) else value


def or_string(own: dict[str, Any]) -> dict[str, Any]:
    """The input schema of a field that also takes a string in place of its own form."""
    return {"anyOf": [{"type": "string"}, own]}


# What a job file may hold where a converter takes more than the converted type (for editors).
DURATION_INPUT = {"anyOf": [
    {"type": "object", "properties": {unit: {"type": "number", "minimum": 0} for unit in UNIT_SECONDS},
     "additionalProperties": False, "minProperties": 1},
    {"type": "string", "pattern": SHORT_FORM.pattern}]}

Duration = Annotated[float, BeforeValidator(parse_duration, lambda own: DURATION_INPUT)]
Url = Annotated[str, BeforeValidator(as_url)]
SafeName = Annotated[str, BeforeValidator(as_safe_name)]
ShellName = Annotated[str, BeforeValidator(as_shell_name)]
Regex = Annotated[str, BeforeValidator(as_regex)]  # compiled at validate time: a bad prompt fails here, not at boot
Os = Literal["android", "ubuntu", "debian", "oe"]
Compression = Literal["gz", "bz2", "xz"]


class Strict(Model, extra="forbid"):
    """A job's mapping: a misspelt key is an error, not silently ignored."""


class ImageSpec(Strict):
    """One downloadable file (LAVA 2023 ``images:`` entries, tftp mappings)."""

    url: Url
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    image_arg: str | None = None
    format: Literal["cpio.newc", "tar", "ext4", "raw", "qcow2"] | None = None
    overlays: dict[str, Any] | None = None
    type: Literal["zimage", "uimage", "image"] | None = None
    header: Literal["u-boot"] | None = None
    root_partition: int | None = Field(None, ge=0, le=128)
    install_modules: bool | None = None
    install_overlay: bool | None = None
    prefix: str | None = None  # where the root is inside an NFS root tarball (LAVA's nfsrootfs prefix)
    # LAVA keys that change nothing here.
    headers: dict[str, str] | None = None
    archive: Literal["tar"] | None = None
    sha512sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{128}$")
    use_cache: bool | None = None
    partition: int | None = Field(None, ge=0, le=128)
    sparse: bool | None = None
    overlay_backend: Literal["auto", "e2fsprogs", "guestfs"] | None = None


def _image_spec(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


FileRef = Annotated[ImageSpec, BeforeValidator(_image_spec, or_string)]


# ---------------------------------------------------------------- problems as lines


def problem_lines(exc: ValidationError, prefix: str) -> list[str]:
    """One line per problem, each naming its place under prefix."""
    return [f"{format_place(err['loc'], prefix)}: {err['msg']}" for err in exc.errors()]


def validate_model(model: type[M], data: Any, place: str, problems: list[str]) -> M | None:
    """``data`` checked by ``model``, or None with its problems added (each under ``place``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(problem_lines(exc, place))
        return None


def load_yaml(text: str, what: str = "job", prefix: str = "") -> Any:
    """Load YAML within bounds (pipeline.yamlload); ProblemList names each problem's place."""
    try:
        return load_document(text, what, prefix)
    except YamlRejected as exc:
        raise ProblemList(exc.problems) from None
