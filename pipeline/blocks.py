"""An action block of a job: the keys every block accepts, and the block once validated.

Each method (``deploy: {to: tmpfs}``, ``boot: {method: qemu}``, ``test``)
has its own model, a subclass of ActionBase that lives with the method's
strategy and actions (pipeline/actions/<kind>/<method>.py). What the rest
of the engine asks of a block's model is here, with what any block
answers:

- ``read_parts``: parse what the model keeps as raw data (a test block's
  definitions) into the ActionBlock;
- ``rules``: problems between the block's own keys;
- ``job_rules``: problems that depend on the rest of the job;
- ``urls``: every file the block downloads, with its place;
- ``deployment``: what a deploy will hand to the boot after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pipeline.fields import Duration, Field, SafeName, Strict, as_list, or_string
from pipeline.schema import BeforeValidator, Model

if TYPE_CHECKING:
    from pipeline.deployment import Deployment
    from pipeline.testdef import TestDefinition

MULTINODE_REQUESTS = ("lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start")


class ProtocolCall(Strict):
    """One call of the Multinode API made by an action (the seed's two forms)."""

    action: str | None = None
    request: Literal["lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start"] | None = None
    api: Literal["lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start"] | None = None
    messageID: str | None = None
    id: str | None = None
    key: str | None = None
    message: dict[str, Any] | None = None
    role: str | None = None
    expect_role: str | None = None
    roles: list[str] | None = None
    timeout: Duration | None = None

    @property
    def call(self) -> str:
        return self.request or self.api or ""

    @property
    def message_id(self) -> str | None:
        return self.messageID or self.id


def _protocol_calls(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class ActionProtocols(Strict):
    lava_multinode: Annotated[list[ProtocolCall], BeforeValidator(
        _protocol_calls, lambda own: {"anyOf": [own["items"], own]})] = Field(
        [], alias="lava-multinode"
    )


class ActionBase(Strict):
    """Keys every action block accepts."""

    timeout: Duration | None = None
    timeouts: dict[SafeName, Duration] | None = None
    failure_retry: int | None = Field(None, ge=1, le=100)
    failure_retry_interval: int | None = Field(None, ge=1, le=3600)  # LAVA's; retries here start at once
    repeat: int | None = Field(None, ge=1, le=1000)
    role: Annotated[list[str], BeforeValidator(as_list, or_string)] | None = None
    protocols: ActionProtocols | None = None
    # LAVA 2023 keys that change nothing here; accepted so its jobs load.
    namespace: str | None = None
    connection_namespace: str | None = Field(None, alias="connection-namespace")

    def read_parts(self, block: ActionBlock, problems: list[str]) -> None:
        """Parse what this model keeps as raw data into ``block`` (a test block's definitions)."""

    def rules(self, place: str) -> list[str]:
        """Problems between this block's own keys (each line naming its place)."""
        return []

    def job_rules(self, place: str, blocks: Sequence[ActionBlock]) -> list[str]:
        """Problems that depend on the other blocks of the job (``blocks``: all of them, repeats opened)."""
        return []

    def urls(self, place: str) -> list[tuple[str, str]]:
        """(place, URL) of every file this block downloads."""
        return []

    def deployment(self, place: str) -> Deployment | None:
        """What this block hands on to the boot after it, as known from the job (None: not a deploy)."""
        return None

    @property
    def calls(self) -> list[ProtocolCall]:
        """The Multinode protocol calls this block makes."""
        return list(self.protocols.lava_multinode) if self.protocols else []


@dataclass
class ActionBlock:
    """One action of the job, after validation."""

    kind: str  # deploy, boot, test, command, submit
    params: Model  # the validated model of the block's method (DeployTmpfs, BootQemu, TestBlock, ...)
    place: str  # where it is in the job, e.g. "actions[2].boot"
    raw: dict[str, Any]
    definitions: list[TestDefinition] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return list(self.params.role or []) if isinstance(self.params, ActionBase) else []

    @property
    def settings(self) -> ActionBase | None:
        """The keys every block has (timeout, role, protocols, ...); None for a block without them (submit)."""
        return self.params if isinstance(self.params, ActionBase) else None


@dataclass
class RepeatBlock:
    count: int
    actions: list[ActionBlock]
    place: str
