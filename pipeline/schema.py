"""Typed, declarative models for job and device files: the annotations are the schema.

A small typed-model layer in the style of pydantic, with only what job and
device files need, so that it imports in about a millisecond:
``lava-dispatch run`` starts a new process for every job::

    class Role(Model, extra="forbid"):
        device_type: SafeName
        count: int = Field(1, ge=1, le=64)
        tags: list[str] = []

``Role.model_validate(data)`` returns a read-only instance, or raises
ValidationError listing every problem, each with its place (``loc``).
A class reads its own annotations the first time it (or a subclass)
validates, not at import, with ``typing.get_type_hints`` in the class's
module (so ``from __future__ import annotations`` and quoted forward
references work), and keeps what it found.

Types: int (bool is not a number here), float, str, bool, Any, Literal[...],
unions (``X | None``, ``str | list[str]``), list[T], dict[K, V], nested
models and ``Annotated[T, BeforeValidator(fn)]``: fn converts the raw value
or raises ValueError (TypeError and ArithmeticError too), whose text is the
problem reported. A field with an alias is found by its alias only: its
Python name in the input is an unknown key, even with ``extra="allow"``.
``extra="forbid"`` (the default) reports unknown keys; ``extra="allow"``
keeps them (``model_extra``, attributes).

The types' nodes are in pipeline.schema_types, the wording of problems in
pipeline.schema_errors.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pipeline.schema_errors import ValidationError, add, type_error
from pipeline.schema_types import (
    MISSING,
    SCALARS,
    AnyNode,
    BeforeNode,
    BeforeValidator,
    ConstrainedNode,
    Defs,
    DictNode,
    Errors,
    Field,
    JsonSchema,
    ListNode,
    LiteralNode,
    Loc,
    Node,
    UnionNode,
)

__all__ = ["BeforeValidator", "Field", "Model", "ValidationError"]

_IMMUTABLE = (type(None), bool, int, float, str, tuple, frozenset)


class _ModelNode(Node):
    what = "a mapping"

    def __init__(self, model: type[Model]):
        self.model = model

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, self.model):
            return value
        attrs = self.model._attrs(value, loc, errors)
        return None if attrs is None else self.model._build(attrs)

    def json_schema(self, defs: Defs) -> JsonSchema:
        return defs.ref(self.model, lambda: self.model._object_schema(defs))


def _node_for(tp: Any) -> Node:
    """The node that checks values of the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None:
        if tp is Any:
            return AnyNode()
        if tp in SCALARS:
            return SCALARS[tp]
        if tp is list:
            return ListNode(AnyNode())
        if tp is dict:
            return DictNode(AnyNode(), AnyNode())
        if isinstance(tp, type) and issubclass(tp, Model):
            return _ModelNode(tp)
    elif origin is Annotated:
        node = _node_for(args[0])
        for meta in args[1:]:  # the last validator is outermost: it runs first, as in pydantic
            if not isinstance(meta, BeforeValidator):
                raise TypeError(f"unsupported Annotated metadata {meta!r}")
            node = BeforeNode(meta, node)
        return node
    elif origin is Literal:
        return LiteralNode(args)
    elif origin is Union or origin is types.UnionType:
        members = [_node_for(a) for a in args if a is not type(None)]
        return UnionNode(members, nullable=len(members) < len(args))
    elif origin is list:
        return ListNode(_node_for(args[0]))
    elif origin is dict:
        return DictNode(_node_for(args[0]), _node_for(args[1]))
    raise TypeError(f"unsupported field type {tp!r}")


# ---------------------------------------------------------------- fields of a class


class _Spec:
    """One field of a model, analysed."""

    __slots__ = ("name", "key", "node", "default", "description")

    def __init__(self, name: str, key: str, node: Node, default: Any, description: str | None):
        self.name = name
        self.key = key
        self.node = node
        self.default = default
        self.description = description


class _Plan:
    """What a model class checks: its fields in order, the keys they answer to, and aliased fields' names."""

    def __init__(self, specs: list[_Spec]):
        self.specs = specs
        self.names = frozenset(s.name for s in specs)
        self.keys = frozenset(s.key for s in specs)
        self.aliased = {s.name: s.key for s in specs if s.name != s.key and s.name not in self.keys}


def _type_hints(cls: type, annotations: dict[str, Any]) -> dict[str, Any]:
    """``annotations`` (of ``cls``'s own) resolved by typing.get_type_hints in ``cls``'s module.

    get_type_hints(cls) would resolve every base class's annotations again
    for each subclass: a holder of the class's own annotations lets each
    class be resolved once and its bases' fields be reused. The class's own
    attributes are not names here (``localns={}``): a field named ``list``
    does not hide the type ``list``.
    """
    holder = type(cls.__name__, (), {"__annotations__": annotations, "__module__": cls.__module__})
    return typing.get_type_hints(holder, localns={}, include_extras=True)


def _own_specs(cls: type[Model]) -> dict[str, _Spec]:
    """The fields ``cls`` itself annotates, analysed once per class."""
    cached: dict[str, _Spec] | None = cls.__dict__.get("_specs_cache")
    if cached is not None:
        return cached
    annotations = {name: annotation for name, annotation in cls.__dict__.get("__annotations__", {}).items()
                   if not name.startswith("_")}
    try:
        hints = _type_hints(cls, annotations) if annotations else {}
    except Exception:  # NameError, or TypeError/SyntaxError for a malformed annotation: name the field
        for name, annotation in annotations.items():
            try:
                _type_hints(cls, {name: annotation})
            except Exception as exc:
                raise TypeError(f"{cls.__qualname__}.{name}: cannot resolve {annotation!r}: {exc}") from None
        raise
    specs = {}
    for name, tp in hints.items():
        if tp is ClassVar or typing.get_origin(tp) is ClassVar:
            continue
        declared = cls.__dict__.get(name, MISSING)
        field = declared if isinstance(declared, Field) else Field(declared)
        node = _node_for(tp)
        if field.constrained():
            node = ConstrainedNode(node, field)
        specs[name] = _Spec(name, field.alias or name, node, field.default, field.description)
    cls._specs_cache = specs
    return specs


def _fresh(default: Any) -> Any:
    """A default for one instance: mutable ones ([], {}, a model) are copied, never shared."""
    return default if isinstance(default, _IMMUTABLE) else copy.deepcopy(default)


def _dump(value: Any, mode: str, by_alias: bool) -> Any:
    if isinstance(value, Model):
        return value.model_dump(mode=mode, by_alias=by_alias)
    if isinstance(value, dict):
        return {k: _dump(v, mode, by_alias) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v, mode, by_alias) for v in value]
    if mode == "json" and not isinstance(value, (str, int, float, type(None))):
        return value.isoformat() if hasattr(value, "isoformat") else str(value)  # YAML dates, bytes, ...
    return value


# ---------------------------------------------------------------- models


class Model:
    """Base of the typed models. Subclass with ``extra="forbid"`` (default) or ``extra="allow"``."""

    _extra: ClassVar[str] = "forbid"
    _plan_cache: ClassVar[_Plan]  # set on each class by its first validation
    _specs_cache: ClassVar[dict[str, _Spec]]

    def __init_subclass__(cls, extra: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if extra is not None:
            if extra not in ("forbid", "allow"):
                raise ValueError(f"extra must be 'forbid' or 'allow', not {extra!r}")
            cls._extra = extra

    def __init__(self, **data: Any):
        """An instance of the keys ``data`` gives (aliases, as in a file), checked."""
        self.__dict__.update(type(self)._checked_attrs(data))

    # -------------------------------------------------------- validation

    @classmethod
    def _plan(cls) -> _Plan:
        plan: _Plan | None = cls.__dict__.get("_plan_cache")
        if plan is None:
            specs: dict[str, _Spec] = {}
            for klass in reversed(cls.__mro__):  # a subclass's annotation overrides its base's
                if issubclass(klass, Model) and klass is not Model:
                    specs.update(_own_specs(klass))
            plan = _Plan(list(specs.values()))
            cls._plan_cache = plan
        return plan

    @classmethod
    def _attrs(cls, data: Any, loc: Loc, errors: Errors) -> dict[str, Any] | None:
        """The instance attributes for ``data``; None when a problem was added to ``errors``."""
        if not isinstance(data, dict):
            type_error(errors, loc, "a mapping", data)
            return None
        plan = cls._plan()
        before = len(errors)
        attrs: dict[str, Any] = {}
        for spec in plan.specs:
            if spec.key in data:
                attrs[spec.name] = spec.node.validate(data[spec.key], loc + (spec.key,), errors)
            elif spec.default is MISSING:
                add(errors, loc + (spec.key,), "required but missing", "missing")
            else:
                attrs[spec.name] = _fresh(spec.default)
        extra = {}
        for key, value in data.items():
            if key in plan.keys:
                continue
            if key in plan.aliased:  # a field's Python name, never a key of the file, even where extras are kept
                add(errors, loc + (key,), f"unknown key (the key is {plan.aliased[key]!r})", "extra_forbidden")
            elif cls._extra == "forbid":
                add(errors, loc + (key,), "unknown key", "extra_forbidden")
            else:
                extra[key] = value
        attrs["model_extra"] = extra
        return attrs if len(errors) == before else None

    @classmethod
    def _checked_attrs(cls, data: Any) -> dict[str, Any]:
        """The instance attributes for ``data``, or ValidationError with every problem."""
        errors: Errors = []
        attrs = cls._attrs(data, (), errors)
        if attrs is None:
            raise ValidationError(cls.__name__, errors)
        return attrs

    @classmethod
    def _build(cls, attrs: dict[str, Any]) -> typing.Self:
        obj = cls.__new__(cls)
        obj.__dict__.update(attrs)
        return obj

    @classmethod
    def model_validate(cls, data: Any) -> typing.Self:
        """A checked instance of ``data`` (a mapping); ValidationError lists every problem."""
        if isinstance(data, cls):
            return data
        return cls._build(cls._checked_attrs(data))

    # -------------------------------------------------------- instances

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: an extra key kept by extra="allow".
        extra = self.__dict__.get("model_extra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: use model_copy(update=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]  # equal by value, and values hold dicts

    def __repr__(self) -> str:
        fields = ", ".join(f"{s.name}={self.__dict__[s.name]!r}" for s in self._plan().specs)
        return f"{type(self).__name__}({fields})"

    def model_dump(self, *, mode: str = "python", by_alias: bool = False) -> dict[str, Any]:
        """The fields then the kept extra keys as plain data; ``mode="json"`` turns dates into strings."""
        out = {}
        for spec in self._plan().specs:
            out[spec.key if by_alias else spec.name] = _dump(self.__dict__[spec.name], mode, by_alias)
        out.update(_dump(self.__dict__["model_extra"], mode, by_alias))
        return out

    def model_copy(self, *, update: dict[str, Any] | None = None) -> typing.Self:
        """A shallow copy with ``update`` (field names, not checked) applied."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        extra = dict(self.__dict__["model_extra"])
        names = self._plan().names
        for key, value in (update or {}).items():
            if key in names:
                new.__dict__[key] = value
            elif self._extra == "allow":
                extra[key] = value
            else:
                raise ValueError(f"{type(self).__name__} has no field {key!r}")
        new.__dict__["model_extra"] = extra
        return new

    # -------------------------------------------------------- JSON Schema

    @classmethod
    def _object_schema(cls, defs: Defs) -> JsonSchema:
        properties: JsonSchema = {}
        required = []
        for spec in cls._plan().specs:
            prop = spec.node.json_schema(defs)
            if spec.description:
                prop["description"] = spec.description
            if spec.default is MISSING:
                required.append(spec.key)
            else:
                prop["default"] = _dump(spec.default, "json", True)
            properties[spec.key] = prop
        schema: JsonSchema = {"title": cls.__name__, "type": "object", "properties": properties}
        doc = cls.__dict__.get("__doc__")  # the class's own docstring, not its base's
        if doc:
            schema["description"] = " ".join(doc.split())
        if required:
            schema["required"] = required
        schema["additionalProperties"] = cls._extra == "allow"
        return schema

    @classmethod
    def model_json_schema(cls) -> JsonSchema:
        """JSON Schema (draft 2020-12) of the input: keys by alias, nested models under ``$defs``.

        A nested model's key under ``$defs`` is its class name, or its module
        and qualified name where two models of one name meet (see schema_types.Defs).
        """
        found = Defs()
        cls._object_schema(found)  # which models the schema holds, so that each gets its key first
        defs = Defs(keyed=found)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **cls._object_schema(defs)}
        if defs.schemas:
            schema["$defs"] = defs.json()
        return schema
