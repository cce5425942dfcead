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
A class reads its annotations the first time it validates (not at import)
and keeps what it found.

Types: int (bool is not a number here), float, str, bool, Any, Literal[...],
unions (``X | None``, ``str | list[str]``), list[T], dict[K, V], nested
models and ``Annotated[T, BeforeValidator(fn)]``: fn converts the raw value
or raises ValueError, whose text is the problem reported. A key is found by
its alias or by the field's name. ``extra="forbid"`` (the default) reports
unknown keys; ``extra="allow"`` keeps them (``model_extra``, attributes).
"""

from __future__ import annotations

import copy
import re
import sys
import types
import typing
from typing import Annotated, Any, Callable, ClassVar, Literal, Union

from pipeline.schema_errors import ValidationError, add as _add, got as _got, short as _short, type_error as _type_error

_MISSING: Any = object()  # no default given: the key is required
_IMMUTABLE = (type(None), bool, int, float, str, tuple, frozenset)


class Field:
    """A field's default and constraints, assigned as the class attribute."""

    __slots__ = ("default", "alias", "ge", "le", "pattern", "min_length", "max_length", "description")

    def __init__(self, default: Any = _MISSING, *, alias: str | None = None, ge: float | None = None,
                 le: float | None = None, pattern: str | None = None, min_length: int | None = None,
                 max_length: int | None = None, description: str | None = None):
        self.default = default
        self.alias = alias
        self.ge = ge
        self.le = le
        self.pattern = pattern
        self.min_length = min_length
        self.max_length = max_length
        self.description = description

    def constrained(self) -> bool:
        return any(v is not None for v in (self.ge, self.le, self.pattern, self.min_length, self.max_length))


class BeforeValidator:
    """``Annotated`` metadata: ``func`` turns the raw value into one the type accepts, or raises ValueError.

    ``input_schema`` describes, for editors, what a file may hold here: it is
    given the converted type's own JSON Schema and returns the schema of the
    forms ``func`` takes (a duration mapping for a number of seconds, a URL
    string as well as a mapping). Without it, the type's own schema is used.
    """

    __slots__ = ("func", "input_schema")

    def __init__(self, func: Callable[[Any], Any],
                 input_schema: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.func = func
        self.input_schema = input_schema


# ---------------------------------------------------------------- types
# Each annotation becomes a tree of nodes, built once per class: a node
# checks a value (appending problems, returning the converted value) and
# describes itself as JSON Schema.


class _Node:
    what = "a value"  # for "expected ..., got ..."

    def validate(self, value: Any, loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _AnyNode(_Node):
    def validate(self, value, loc, errors):
        return value

    def json_schema(self, defs):
        return {}


class _Scalar(_Node):
    def __init__(self, json_type: str, what: str, accepted: tuple[type, ...], convert: Callable[[Any], Any] | None = None):
        self.json_type = json_type
        self.what = what
        self.accepted = accepted
        self.convert = convert
        self.bool_ok = bool in accepted  # YAML's true is a bool, never a number

    def validate(self, value, loc, errors):
        if not isinstance(value, self.accepted) or (isinstance(value, bool) and not self.bool_ok):
            _type_error(errors, loc, self.what, value)
            return None
        try:
            return self.convert(value) if self.convert else value
        except (ValueError, OverflowError):
            _type_error(errors, loc, f"{self.what} (finite)", value)
            return None

    def json_schema(self, defs):
        return {"type": self.json_type}


def _finite(value: float) -> float:
    number = float(value)  # OverflowError for an integer beyond float's range
    if number - number != 0:  # NaN and infinities: no timer or size means them
        raise ValueError(value)
    return number


_SCALARS: dict[Any, _Node] = {
    int: _Scalar("integer", "a whole number", (int,)),
    float: _Scalar("number", "a number", (int, float), _finite),
    str: _Scalar("string", "a string", (str,)),
    bool: _Scalar("boolean", "true or false", (bool,)),
}


class _LiteralNode(_Node):
    def __init__(self, choices: tuple[Any, ...]):
        self.choices = choices
        self.what = " or ".join(map(repr, choices))

    def validate(self, value, loc, errors):
        for choice in self.choices:
            if type(value) is type(choice) and value == choice:
                return choice
        if len(self.choices) == 1:
            _add(errors, loc, f"{_short(value)} must be {self.choices[0]}")
        else:
            _add(errors, loc, f"{_short(value)} is not one of {', '.join(map(str, self.choices))}")
        return None

    def json_schema(self, defs):
        schema: dict[str, Any] = {"const": self.choices[0]} if len(self.choices) == 1 else {"enum": list(self.choices)}
        if all(isinstance(c, str) for c in self.choices):
            schema["type"] = "string"
        return schema


class _UnionNode(_Node):
    def __init__(self, members: list[_Node], nullable: bool):
        self.members = members
        self.nullable = nullable
        self.what = " or ".join(dict.fromkeys(m.what for m in members))

    def validate(self, value, loc, errors):
        if value is None and self.nullable:
            return None
        if len(self.members) == 1:
            return self.members[0].validate(value, loc, errors)
        attempts = []
        for member in self.members:
            found: list[dict[str, Any]] = []
            result = member.validate(value, loc, found)
            if not found:
                return result
            attempts.append(found)
        # Report the member the value has the shape of (a list for list[str]);
        # a value of no member's shape gets one line naming them all.
        for found in attempts:
            if not (len(found) == 1 and found[0]["type"] == "type_error" and found[0]["loc"] == loc):
                errors.extend(found)
                return None
        _type_error(errors, loc, self.what, value)
        return None

    def json_schema(self, defs):
        branches = [m.json_schema(defs) for m in self.members]
        if self.nullable:
            branches.append({"type": "null"})
        return branches[0] if len(branches) == 1 else {"anyOf": branches}


class _ListNode(_Node):
    what = "a list"

    def __init__(self, item: _Node):
        self.item = item

    def validate(self, value, loc, errors):
        if not isinstance(value, list):
            _type_error(errors, loc, self.what, value)
            return None
        return [self.item.validate(v, loc + (i,), errors) for i, v in enumerate(value)]

    def json_schema(self, defs):
        return {"type": "array", "items": self.item.json_schema(defs)}


class _DictNode(_Node):
    what = "a mapping"

    def __init__(self, key: _Node, value: _Node):
        self.key = key
        self.value = value

    def validate(self, value, loc, errors):
        if not isinstance(value, dict):
            _type_error(errors, loc, self.what, value)
            return None
        out = {}
        for key, item in value.items():
            found: list[dict[str, Any]] = []
            checked = self.key.validate(key, loc + (key,), found)
            for error in found:
                error["msg"] = f"invalid key: {error['msg']}"
            errors.extend(found)
            out[key if found else checked] = self.value.validate(item, loc + (key,), errors)
        return out

    def json_schema(self, defs):
        inner = self.value.json_schema(defs)
        return {"type": "object", "additionalProperties": inner or True}


class _ModelNode(_Node):
    what = "a mapping"

    def __init__(self, model: type[Model]):
        self.model = model

    def validate(self, value, loc, errors):
        if isinstance(value, self.model):
            return value
        attrs = self.model._attrs(value, loc, errors)
        return None if attrs is None else self.model._build(attrs)

    def json_schema(self, defs):
        name = self.model.__name__
        if name not in defs:
            defs[name] = {}  # taken before it is filled: a model may refer to itself
            defs[name] = self.model._object_schema(defs)
        return {"$ref": f"#/$defs/{name}"}


class _BeforeNode(_Node):
    def __init__(self, validator: BeforeValidator, inner: _Node):
        self.func = validator.func
        self.input_schema = validator.input_schema
        self.inner = inner
        self.what = inner.what

    def validate(self, value, loc, errors):
        try:
            value = self.func(value)
        except (ValueError, TypeError, ArithmeticError) as exc:  # whatever a converter meets is the value's problem
            _add(errors, loc, str(exc) or f"cannot use {_got(value)}")
            return None
        return self.inner.validate(value, loc, errors)

    def json_schema(self, defs):
        own = self.inner.json_schema(defs)
        return self.input_schema(own) if self.input_schema else own


class _ConstrainedNode(_Node):
    """A Field's ge/le/pattern/min_length/max_length, checked once the type is right (None is left alone)."""

    def __init__(self, inner: _Node, field: Field):
        self.inner = inner
        self.field = field
        self.what = inner.what
        self.pattern = re.compile(field.pattern) if field.pattern is not None else None

    def validate(self, value, loc, errors):
        before = len(errors)
        value = self.inner.validate(value, loc, errors)
        if len(errors) > before or value is None:
            return value
        f = self.field
        if f.ge is not None and value < f.ge:
            _add(errors, loc, f"must be >= {f.ge}, got {_short(value)}")
        if f.le is not None and value > f.le:
            _add(errors, loc, f"must be <= {f.le}, got {_short(value)}")
        if self.pattern is not None and isinstance(value, str) and not self.pattern.search(value):
            _add(errors, loc, f"{_short(value)} does not match {f.pattern}")
        if f.min_length is not None and len(value) < f.min_length:
            _add(errors, loc, f"must have at least {_count(f.min_length, value)}, got {len(value)}")
        if f.max_length is not None and len(value) > f.max_length:
            _add(errors, loc, f"must have at most {_count(f.max_length, value)}, got {len(value)}")
        return value

    def json_schema(self, defs):
        schema = self.inner.json_schema(defs)
        # Optional[int] with ge=1: the bound belongs to the integer branch.
        branches = [b for b in schema.get("anyOf", ()) if b.get("type") != "null"]
        target = branches[0] if len(branches) == 1 else schema
        f = self.field
        length = {"string": ("minLength", "maxLength"), "object": ("minProperties", "maxProperties")}.get(
            target.get("type"), ("minItems", "maxItems"))
        for keyword, value in (("minimum", f.ge), ("maximum", f.le), ("pattern", f.pattern),
                               (length[0], f.min_length), (length[1], f.max_length)):
            if value is not None:
                target[keyword] = value
        return schema


def _count(n: int, value: Any) -> str:
    unit = "character" if isinstance(value, str) else "item"
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _node_for(tp: Any) -> _Node:
    """The node that checks values of the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None:
        if tp is Any:
            return _AnyNode()
        if tp in _SCALARS:
            return _SCALARS[tp]
        if tp is list:
            return _ListNode(_AnyNode())
        if tp is dict:
            return _DictNode(_AnyNode(), _AnyNode())
        if isinstance(tp, type) and issubclass(tp, Model):
            return _ModelNode(tp)
    elif origin is Annotated:
        node = _node_for(args[0])
        for meta in args[1:]:  # the last validator is outermost: it runs first, as in pydantic
            if not isinstance(meta, BeforeValidator):
                raise TypeError(f"unsupported Annotated metadata {meta!r}")
            node = _BeforeNode(meta, node)
        return node
    elif origin is Literal:
        return _LiteralNode(args)
    elif origin is Union or origin is types.UnionType:
        members = [_node_for(a) for a in args if a is not type(None)]
        return _UnionNode(members, nullable=len(members) < len(args))
    elif origin is list:
        return _ListNode(_node_for(args[0]))
    elif origin is dict:
        return _DictNode(_node_for(args[0]), _node_for(args[1]))
    raise TypeError(f"unsupported field type {tp!r}")


# ---------------------------------------------------------------- models


class _Spec:
    """One field of a model, analysed."""

    __slots__ = ("name", "key", "node", "default", "description")

    def __init__(self, name: str, key: str, node: _Node, default: Any, description: str | None):
        self.name = name
        self.key = key
        self.node = node
        self.default = default
        self.description = description


class _Plan:
    """What a model class checks: its fields in order and every key they answer to."""

    def __init__(self, specs: list[_Spec]):
        self.specs = specs
        self.names = frozenset(s.name for s in specs)
        self.keys = self.names | {s.key for s in specs}


def _own_specs(cls: type) -> dict[str, _Spec]:
    """The fields ``cls`` itself annotates; strings are evaluated in its module."""
    namespace = vars(sys.modules[cls.__module__])
    specs = {}
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if name.startswith("_"):
            continue
        try:
            tp = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307 - our own source
        except NameError as exc:
            raise TypeError(f"{cls.__qualname__}.{name}: cannot resolve {annotation!r}: {exc}") from None
        if tp is ClassVar or typing.get_origin(tp) is ClassVar:
            continue
        declared = cls.__dict__.get(name, _MISSING)
        field = declared if isinstance(declared, Field) else Field(declared)
        node = _node_for(tp)
        if field.constrained():
            node = _ConstrainedNode(node, field)
        specs[name] = _Spec(name, field.alias or name, node, field.default, field.description)
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


class Model:
    """Base of the typed models. Subclass with ``extra="forbid"`` (default) or ``extra="allow"``."""

    _extra = "forbid"

    def __init_subclass__(cls, extra: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if extra is not None:
            if extra not in ("forbid", "allow"):
                raise ValueError(f"extra must be 'forbid' or 'allow', not {extra!r}")
            cls._extra = extra

    def __init__(self, **data: Any):
        self.__dict__.update(type(self)._checked_attrs(data))

    # -------------------------------------------------------- validation

    @classmethod
    def _plan(cls) -> _Plan:
        plan = cls.__dict__.get("_plan_cache")
        if plan is None:
            specs: dict[str, _Spec] = {}
            for klass in reversed(cls.__mro__):  # a subclass's annotation overrides its base's
                if issubclass(klass, Model):
                    specs.update(_own_specs(klass))
            plan = _Plan(list(specs.values()))
            cls._plan_cache = plan
        return plan

    @classmethod
    def _attrs(cls, data: Any, loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The instance attributes for ``data``; None when a problem was added to ``errors``."""
        if not isinstance(data, dict):
            _type_error(errors, loc, "a mapping", data)
            return None
        plan = cls._plan()
        before = len(errors)
        attrs: dict[str, Any] = {}
        for spec in plan.specs:
            key = spec.key if spec.key in data else spec.name  # the alias, or the field's own name
            if key in data:
                attrs[spec.name] = spec.node.validate(data[key], loc + (key,), errors)
            elif spec.default is _MISSING:
                _add(errors, loc + (spec.key,), "required but missing", "missing")
            else:
                attrs[spec.name] = _fresh(spec.default)
        extra = {k: v for k, v in data.items() if k not in plan.keys}
        if extra and cls._extra == "forbid":
            for key in extra:
                _add(errors, loc + (key,), "unknown key", "extra_forbidden")
            extra = {}
        attrs["model_extra"] = extra
        return attrs if len(errors) == before else None

    @classmethod
    def _checked_attrs(cls, data: Any) -> dict[str, Any]:
        """The instance attributes for ``data``, or ValidationError with every problem."""
        errors: list[dict[str, Any]] = []
        attrs = cls._attrs(data, (), errors)
        if attrs is None:
            raise ValidationError(cls.__name__, errors)
        return attrs

    @classmethod
    def _build(cls, attrs: dict[str, Any]) -> Model:
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

    __hash__ = None  # type: ignore[assignment] - equal by value, and values hold dicts

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
    def _object_schema(cls, defs: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        for spec in cls._plan().specs:
            prop = spec.node.json_schema(defs)
            if spec.description:
                prop["description"] = spec.description
            if spec.default is _MISSING:
                required.append(spec.key)
            else:
                prop["default"] = _dump(spec.default, "json", True)
            properties[spec.key] = prop
        schema: dict[str, Any] = {"title": cls.__name__, "type": "object", "properties": properties}
        if cls.__dict__.get("__doc__"):  # the class's own docstring, not its base's
            schema["description"] = " ".join(cls.__doc__.split())
        if required:
            schema["required"] = required
        schema["additionalProperties"] = cls._extra == "allow"
        return schema

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of the input: keys by alias, nested models under ``$defs``."""
        defs: dict[str, Any] = {}
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **cls._object_schema(defs)}
        if defs:
            schema["$defs"] = dict(sorted(defs.items()))
        return schema
