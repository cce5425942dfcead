"""The registry of methods, and what a method plugs into: Strategy and BuildPlan.

A method (``deploy: {to: tftp}``, ``boot: {method: qemu}``, the ``test``
block) is one module of pipeline/actions/ that registers, with decorators
run when it is imported:

- its block model: ``@block_model("boot", "qemu")`` (the value of the
  kind's selector key, ``to`` or ``method``; test and submit blocks have
  none), which the job parser, the JSON Schema and ``Job.urls`` derive from;
- its strategy: ``@strategy("boot", priority=10)``, which says whether it
  accepts a block on a device (``accepts(device, params) -> (ok, reason)``)
  and builds the block's top-level action;
- its actions' names: ``@known_action``, so that a named timeout naming
  no action of the engine is refused.

Registration is explicit: pipeline.builtin imports the built-in methods in
a list (their order is the order of the choices in messages and of
strategies of equal priority). A method or a strategy registered twice
under one name is a RegistryError. Action names may be shared (LAVA gives
several bootloaders' steps one name, and a named timeout sets them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pipeline.action import Action
from pipeline.blocks import ActionBlock
from pipeline.deployment import Deployment
from pipeline.device import Device
from pipeline.errors import Bug, RegistryError
from pipeline.job import Job
from pipeline.schema import Model

# The kinds of action block, and the key whose value selects a kind's method.
KINDS: dict[str, str | None] = {"deploy": "to", "boot": "method", "test": None, "submit": None}

M = TypeVar("M", bound=type[Model])
S = TypeVar("S", bound="type[Strategy]")
A = TypeVar("A", bound=type[Action])
P = TypeVar("P")


class Strategy:
    """Chooses and builds the action for one kind of block."""

    kind: ClassVar[str] = ""  # deploy, boot, test, submit
    priority: ClassVar[int] = 0

    @classmethod
    def accepts(cls, device: Device, params: object) -> tuple[bool, str]:
        raise NotImplementedError

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        raise NotImplementedError


def params_of(block: ActionBlock, model: type[P]) -> P:
    """The block's parameters as the model its strategy accepted."""
    if not isinstance(block.params, model):
        raise Bug(f"{block.place}: a {model.__name__} strategy was given a {type(block.params).__name__}")
    return block.params


@dataclass
class BuildPlan:
    """What a strategy may look at while building: the whole job in execution order."""

    job: Job
    device: Device
    order: list[ActionBlock]  # top-level blocks of this board, repeats expanded
    position: int  # index of the block being built in ``order``

    def stages_after(self, until_deploy: bool = True) -> list[tuple[int, ActionBlock]]:
        """(stage, block) of each test action after this block: up to the next deploy, or all of them."""
        found = []
        for index in range(self.position + 1, len(self.order)):
            block = self.order[index]
            if block.kind == "deploy" and until_deploy:
                break
            if block.kind == "test":
                found.append((self.stage_of(index), block))
        return found

    def stage_of(self, index: int) -> int:
        return sum(1 for block in self.order[:index] if block.kind == "test")

    def before(self, kind: str) -> bool:
        """Some block of ``kind`` comes before this one."""
        return any(block.kind == kind for block in self.order[: self.position])

    def deployed_before(self) -> bool:
        return self.before("deploy")

    def tests_after(self) -> bool:
        return any(block.kind == "test" for block in self.order[self.position + 1:])

    def deployment(self) -> Deployment | None:
        """What the last deploy before this block will hand on, as declared by its method (None: no deploy)."""
        for block in reversed(self.order[: self.position]):
            if block.kind == "deploy":
                return block.settings.deployment(block.place) if block.settings is not None else None
        return None


class Registry:
    """The block models, strategies and action names of the engine's methods."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, type[Model]]] = {kind: {} for kind in KINDS}
        self.strategies: dict[str, list[type[Strategy]]] = {kind: [] for kind in KINDS}
        self.action_names: set[str] = set()

    def _kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise RegistryError(f"{kind!r} is not a kind of action block (one of {', '.join(KINDS)})")

    def add_model(self, kind: str, names: tuple[str, ...], model: type[Model]) -> None:
        """Register ``model`` as the block model of ``kind`` for each of ``names`` (values of the selector)."""
        self._kind(kind)
        selector = KINDS[kind]
        if selector is None and names:
            raise RegistryError(f"{kind} blocks have no selector key: {model.__name__} takes no method name")
        if selector is not None and not names:
            raise RegistryError(f"{model.__name__}: a {kind} model names the value(s) of {selector!r} it is for")
        table = self.models[kind]
        for name in names or ("",):
            if name in table:
                what = f"{kind} method {name!r}" if name else f"the {kind} block model"
                raise RegistryError(f"{what} is registered twice: {_qualified(table[name])} and "
                                    f"{_qualified(model)}")
            table[name] = model

    def add_strategy(self, kind: str, cls: type[Strategy], priority: int) -> None:
        self._kind(kind)
        known = self.strategies[kind]
        twin = next((other for other in known if other.__name__ == cls.__name__), None)
        if twin is not None:  # reasons name strategies: two of one name could not be told apart
            raise RegistryError(f"{kind} strategy {cls.__name__!r} is registered twice: {_qualified(twin)} and "
                                f"{_qualified(cls)}")
        cls.kind, cls.priority = kind, priority
        known.append(cls)
        known.sort(key=lambda item: -item.priority)  # stable: registration order among equals

    def add_action(self, cls: type[Action]) -> None:
        self.action_names.update((cls.name, *cls.aliases))

    # ------------------------------------------------------------ reading

    def choices(self, kind: str) -> list[str]:
        """The values of ``kind``'s selector, in registration order (tmpfs, tftp, ...)."""
        return [name for name in self.models[kind] if name]

    def model_for(self, kind: str, name: str = "") -> type[Model] | None:
        return self.models[kind].get(name)

    def models_of(self, kind: str) -> list[type[Model]]:
        """Each model of ``kind`` once (usb and sata share one), in registration order."""
        return list(dict.fromkeys(self.models[kind].values()))

    def strategies_for(self, kind: str) -> list[type[Strategy]]:
        return list(self.strategies[kind])


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


REGISTRY = Registry()  # the engine's; filled as the method modules are imported (pipeline.builtin)


def block_model(kind: str, *names: str) -> Callable[[M], M]:
    """Class decorator: ``cls`` is the model of ``kind`` blocks whose selector says one of ``names``."""
    def register(cls: M) -> M:
        REGISTRY.add_model(kind, names, cls)
        return cls

    return register


def strategy(kind: str, priority: int = 0) -> Callable[[S], S]:
    """Class decorator: a strategy for ``kind`` blocks; higher priorities are asked first."""
    def register(cls: S) -> S:
        REGISTRY.add_strategy(kind, cls, priority)
        return cls

    return register


def known_action(cls: A) -> A:
    """Class decorator: record an action's names (and aliases) so named timeouts can be checked."""
    REGISTRY.add_action(cls)
    return cls
