"""The job: its header (name, device type, priority, timeouts, protocols) and its action blocks.

A Job is what pipeline.parser makes of a submission once every check has
passed; the models below are typed classes of pipeline.schema, so they are
the schema too. The action blocks' own models belong to their methods
(pipeline/actions/), shared keys to pipeline.blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pipeline.blocks import ActionBlock, RepeatBlock
from pipeline.checks import shown
from pipeline.fields import Duration, Field, SafeName, ShellName, Strict
from pipeline.notify import Notify
from pipeline.schema import BeforeValidator

PRIORITY_NAMES = {"high": 100, "medium": 50, "low": 0}


def _priority(value: Any) -> Any:
    if isinstance(value, str):
        if value not in PRIORITY_NAMES:
            raise ValueError(f"{shown(value)} is not high, medium, low or a number from 0 to 100")
        return PRIORITY_NAMES[value]
    return value


def job_priority(value: Any) -> int:
    """``value`` checked as a job file's ``priority:`` is (high/medium/low or a whole number 0-100).

    For priorities given outside the job file (the CLI, ``tasks.submit``):
    the same rule, from the header's own field, and ValueError saying why.
    """
    errors: list[dict[str, Any]] = []
    spec = next(s for s in JobHeader._plan().specs if s.name == "priority")
    number = spec.node.validate(value, ("priority",), errors)
    if errors:
        raise ValueError("; ".join(f"priority: {error['msg']}" for error in errors))
    return int(number)


# ---------------------------------------------------------------- protocols


MULTINODE_DEFAULT_TIMEOUT = 90.0  # LAVA's, when protocols.lava-multinode gives none


class MultinodeRole(Strict):
    device_type: SafeName | None = None  # required in a submission (checked by the parser), absent in a sub-job
    count: int = Field(1, ge=1, le=64)
    tags: list[str] = []
    context: dict[str, Any] | None = None
    timeout: Duration | None = None
    # LAVA keys that change nothing here.
    device: str | None = None
    worker: str | None = None
    environment: dict[str, Any] | None = None
    essential: bool | None = None


class MultinodeProtocol(Strict):
    """The group of a multinode job: a submission's roles, or one member's sub-job as lava-server writes it.

    A sub-job (the form lava-server hands to ``lava-run``) names its own
    ``role``, the group (``target_group``, ``group_size``, ``sub_id``) and
    ``roles`` as ``{device: role}``; that mapping becomes ``devices`` here and
    ``roles`` holds each role with its number of devices.
    """

    roles: dict[SafeName, MultinodeRole]
    timeout: Duration = MULTINODE_DEFAULT_TIMEOUT
    target_group: str | None = None
    role: SafeName | None = None
    group_size: int | None = Field(None, ge=1, le=1024)
    sub_id: int | None = Field(None, ge=0, le=1024)
    request: Literal["lava-start"] | None = None
    expect_role: SafeName | None = None
    devices: dict[str, SafeName] = {}

    @property
    def subjob(self) -> bool:
        """One member of a group, in the form lava-server hands to lava-run."""
        return self.role is not None


def _subjob_roles(value: Any) -> Any:
    """A sub-job's ``roles: {device: role}`` as the submission form's ``{role: {count: n}}``."""
    if not isinstance(value, dict) or not isinstance(value.get("roles"), dict):
        return value
    roles = value["roles"]
    if not roles or not all(isinstance(role, str) for role in roles.values()):
        return value
    counts: dict[str, int] = {}
    for role in roles.values():
        counts[role] = counts.get(role, 0) + 1
    return {**value, "devices": dict(roles), "roles": {role: {"count": n} for role, n in counts.items()}}


class JobProtocols(Strict):
    lava_multinode: Annotated[MultinodeProtocol, BeforeValidator(_subjob_roles)] | None = Field(
        None, alias="lava-multinode")


# ---------------------------------------------------------------- job


class JobTimeouts(Strict):
    job: Duration
    action: Duration | None = None
    connection: Duration | None = None
    actions: dict[SafeName, Duration] = {}
    connections: dict[SafeName, Duration] = {}
    deploy: Duration | None = None
    boot: Duration | None = None
    test: Duration | None = None
    queue: Duration | None = None  # a job not scheduled this long after submission is canceled


class JobHeader(Strict):
    job_name: str = Field(min_length=1, max_length=200)
    device_type: SafeName | None = None
    priority: Annotated[int, BeforeValidator(
        _priority, lambda own: {"anyOf": [own, {"enum": list(PRIORITY_NAMES)}]})] = Field(50, ge=0, le=100)
    timeouts: JobTimeouts
    protocols: JobProtocols | None = None
    actions: list[Any] = Field(min_length=1)
    visibility: Any = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    notify: Notify | None = None
    tags: list[str] = []
    secrets: dict[str, str] | None = None
    environment: dict[ShellName, str | int | float | bool] | None = None  # exported in the board's shell
    # LAVA keys that change nothing here: the board a server chose (lava-server's sub-jobs carry ``target``).
    target: str | None = None
    device: str | None = None
    worker: str | None = None


@dataclass
class Job:
    header: JobHeader
    actions: list[ActionBlock | RepeatBlock]
    raw: dict[str, Any]
    text: str

    @property
    def name(self) -> str:
        return self.header.job_name

    @property
    def timeouts(self) -> JobTimeouts:
        """The job's timeouts, parsed to seconds (``job.timeouts.queue``: how long it may wait for a board)."""
        return self.header.timeouts

    @property
    def multinode(self) -> MultinodeProtocol | None:
        return self.header.protocols.lava_multinode if self.header.protocols else None

    def flat_actions(self) -> list[ActionBlock]:
        """Every action block, repeat blocks opened once."""
        out: list[ActionBlock] = []
        for item in self.actions:
            out.extend(item.actions if isinstance(item, RepeatBlock) else [item])
        return out

    def urls(self) -> list[tuple[str, str]]:
        """(place, URL) of every file the job downloads: each block's own, then its test definitions'."""
        found = []
        for block in self.flat_actions():
            if block.settings is not None:
                found += block.settings.urls(block.place)
            for index, definition in enumerate(block.definitions):
                if definition.from_ in ("url", "tar"):
                    found.append((f"{block.place}.definitions[{index}].repository", definition.repository))
        return found

    def has_tests(self) -> bool:
        return any(block.kind == "test" for block in self.flat_actions())
