"""The registry of methods: which block models, strategies and action names the engine has.

A method (``deploy: {to: tftp}``, ``boot: {method: qemu}``, the ``test``
block) is one module of pipeline/actions/ that registers, with decorators
run when it is imported:

- its block model: ``@block_model("boot", "qemu")`` (the value of the
  kind's selector key, ``to`` or ``method``; test and submit blocks have
  none), which the job parser, the JSON Schema and ``Job.urls`` derive from;
- its strategy: ``@strategy("boot", priority=10)``, which says whether it
  accepts a block on a device (``accepts(device, params) -> (ok, reason)``)
  and builds the block's top-level action (pipeline.strategy);
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
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import RegistryError

if TYPE_CHECKING:
    from pipeline.action import Action
    from pipeline.schema import Model
    from pipeline.strategy import Strategy

# The kinds of action block, and the key whose value selects a kind's method.
KINDS: dict[str, str | None] = {"deploy": "to", "boot": "method", "test": None, "submit": None,
                                 "command": None}

M = TypeVar("M", bound="type[Model]")
S = TypeVar("S", bound="type[Strategy]")
A = TypeVar("A", bound="type[Action]")


class Registry:
    """The block models, strategies and action names of the engine's methods."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, type[Model]]] = {kind: {} for kind in KINDS}
        self.strategies: dict[str, list[type[Strategy]]] = {kind: [] for kind in KINDS}
        self.action_names: set[str] = set()
        self.finalize: type[Action] | None = None  # the action every job ends with (``finalize``)

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


def finalizer(cls: A) -> A:
    """Class decorator: the action every pipeline ends with, run while the job is finalized."""
    REGISTRY.finalize = cls
    return cls


def known_action(cls: A) -> A:
    """Class decorator: record an action's names (and aliases) so named timeouts can be checked."""
    REGISTRY.add_action(cls)
    return cls
