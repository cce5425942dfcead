"""What each field type of pipeline.schema checks, and how it is described as JSON Schema.

pipeline.schema turns an annotation into a tree of these nodes, once per
class: a node checks a value (appending problems to a list, returning the
converted value) and describes itself as JSON Schema. Models are pipeline.schema's
own node; ``Defs`` keys them under ``$defs`` in an exported schema.

Nothing a value holds makes a node raise: a converter's ValueError,
TypeError or ArithmeticError is the value's problem, and a constraint
applies only to values it can measure (a bound to numbers, a length to
strings, lists and mappings, a pattern to strings), as in JSON Schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.schema_errors import add, got, short, type_error

Loc = tuple[Any, ...]
Errors = list[dict[str, Any]]
JsonSchema = dict[str, Any]

MISSING: Any = object()  # no default given: the key is required
# What a converter raises about the value it was given: reported at the value's place.
CONVERTER_ERRORS = (ValueError, TypeError, ArithmeticError)


class Field:
    """A field's default and constraints, assigned as the class attribute."""

    __slots__ = ("default", "alias", "ge", "le", "pattern", "min_length", "max_length", "description")

    def __init__(self, default: Any = MISSING, *, alias: str | None = None, ge: float | None = None,
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
                 input_schema: Callable[[JsonSchema], JsonSchema] | None = None):
        self.func = func
        self.input_schema = input_schema


class Defs:
    """The ``$defs`` of one exported schema: each model once, under a key no other model has.

    A model's key is its class name. When models of the same name meet in
    one schema (a ``Parameters`` of two modules), each of them is keyed by
    its module and qualified name instead (``pipeline.job.Parameters`` ->
    ``pipeline__job__Parameters``), so that neither replaces the other.
    The keys are chosen from every model the schema holds: a first pass
    (``keyed`` None) finds them, the second writes the references.
    """

    def __init__(self, keyed: Defs | None = None):
        self.schemas: dict[type, JsonSchema] = {}
        self.keys = _keys(keyed.schemas) if keyed is not None else {}

    def ref(self, model: type, build: Callable[[], JsonSchema]) -> JsonSchema:
        """A reference to ``model``'s schema, built the first time it is met."""
        if model not in self.schemas:
            self.schemas[model] = {}  # taken before it is built: a model may refer to itself
            self.schemas[model] = build()
        return {"$ref": f"#/$defs/{self.keys.get(model, model.__name__)}"}

    def json(self) -> JsonSchema:
        return dict(sorted((self.keys[model], schema) for model, schema in self.schemas.items()))


def _keys(models: Iterable[type]) -> dict[type, str]:
    models = list(models)
    names = [model.__name__ for model in models]
    wanted = [name if names.count(name) == 1 else _qualified(model) for model, name in zip(models, names, strict=True)]
    keys: dict[type, str] = {}
    taken: set[str] = set()
    for model, key in zip(models, wanted, strict=True):
        unique, n = key, 1
        while unique in taken:  # the same module and name twice (a class made by one function, twice)
            n += 1
            unique = f"{key}_{n}"
        taken.add(unique)
        keys[model] = unique
    return keys


def _qualified(model: type) -> str:
    parts = f"{model.__module__}.{model.__qualname__}".split(".")
    return "__".join(re.sub(r"[^A-Za-z0-9_]", "", part) for part in parts)  # <locals> -> locals


# ---------------------------------------------------------------- nodes


class Node:
    what = "a value"  # for "expected ..., got ..."

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        raise NotImplementedError

    def json_schema(self, defs: Defs) -> JsonSchema:
        raise NotImplementedError


class AnyNode(Node):
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        return value

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {}


class Scalar(Node):
    def __init__(self, json_type: str, what: str, accepted: tuple[type, ...],
                 convert: Callable[[Any], Any] | None = None):
        self.json_type = json_type
        self.what = what
        self.accepted = accepted
        self.convert = convert
        self.bool_ok = bool in accepted  # YAML's true is a bool, never a number

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if not isinstance(value, self.accepted) or (isinstance(value, bool) and not self.bool_ok):
            type_error(errors, loc, self.what, value)
            return None
        try:
            return self.convert(value) if self.convert else value
        except (ValueError, OverflowError):
            type_error(errors, loc, f"{self.what} (finite)", value)
            return None

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": self.json_type}


def _finite(value: float) -> float:
    number = float(value)  # OverflowError for an integer beyond float's range
    if number - number != 0:  # NaN and infinities: no timer or size means them
        raise ValueError(value)
    return number


SCALARS: dict[Any, Node] = {
    int: Scalar("integer", "a whole number", (int,)),
    float: Scalar("number", "a number", (int, float), _finite),
    str: Scalar("string", "a string", (str,)),
    bool: Scalar("boolean", "true or false", (bool,)),
}


class LiteralNode(Node):
    def __init__(self, choices: tuple[Any, ...]):
        self.choices = choices
        self.what = " or ".join(map(repr, choices))

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        for choice in self.choices:
            if type(value) is type(choice) and value == choice:
                return choice
        if len(self.choices) == 1:
            add(errors, loc, f"{short(value)} must be {self.choices[0]}")
        else:
            add(errors, loc, f"{short(value)} is not one of {', '.join(map(str, self.choices))}")
        return None

    def json_schema(self, defs: Defs) -> JsonSchema:
        schema: JsonSchema = {"const": self.choices[0]} if len(self.choices) == 1 else {"enum": list(self.choices)}
        if all(isinstance(c, str) for c in self.choices):
            schema["type"] = "string"
        return schema


class UnionNode(Node):
    def __init__(self, members: list[Node], nullable: bool):
        self.members = members
        self.nullable = nullable
        self.what = " or ".join(dict.fromkeys(m.what for m in members))

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if value is None and self.nullable:
            return None
        if len(self.members) == 1:
            return self.members[0].validate(value, loc, errors)
        attempts = []
        for member in self.members:
            found: Errors = []
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
        type_error(errors, loc, self.what, value)
        return None

    def json_schema(self, defs: Defs) -> JsonSchema:
        branches = [m.json_schema(defs) for m in self.members]
        if self.nullable:
            branches.append({"type": "null"})
        return branches[0] if len(branches) == 1 else {"anyOf": branches}


class ListNode(Node):
    what = "a list"

    def __init__(self, item: Node):
        self.item = item

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if not isinstance(value, list):
            type_error(errors, loc, self.what, value)
            return None
        return [self.item.validate(v, loc + (i,), errors) for i, v in enumerate(value)]

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "array", "items": self.item.json_schema(defs)}


class DictNode(Node):
    what = "a mapping"

    def __init__(self, key: Node, value: Node):
        self.key = key
        self.value = value

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if not isinstance(value, dict):
            type_error(errors, loc, self.what, value)
            return None
        out = {}
        for key, item in value.items():
            found: Errors = []
            checked = self.key.validate(key, loc + (key,), found)
            for error in found:
                error["msg"] = f"invalid key: {error['msg']}"
            errors.extend(found)
            out[key if found else checked] = self.value.validate(item, loc + (key,), errors)
        return out

    def json_schema(self, defs: Defs) -> JsonSchema:
        inner = self.value.json_schema(defs)
        return {"type": "object", "additionalProperties": inner or True}


class BeforeNode(Node):
    def __init__(self, validator: BeforeValidator, inner: Node):
        self.func = validator.func
        self.input_schema = validator.input_schema
        self.inner = inner
        self.what = inner.what

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        try:
            value = self.func(value)
        except CONVERTER_ERRORS as exc:
            add(errors, loc, str(exc) or f"cannot use {got(value)}")
            return None
        return self.inner.validate(value, loc, errors)

    def json_schema(self, defs: Defs) -> JsonSchema:
        own = self.inner.json_schema(defs)
        return self.input_schema(own) if self.input_schema else own


class ConstrainedNode(Node):
    """A Field's ge/le/pattern/min_length/max_length, checked once the type is right (None is left alone)."""

    def __init__(self, inner: Node, field: Field):
        self.inner = inner
        self.field = field
        self.what = inner.what
        self.pattern = re.compile(field.pattern) if field.pattern is not None else None

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        before = len(errors)
        value = self.inner.validate(value, loc, errors)
        if len(errors) > before or value is None:
            return value
        f = self.field
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if f.ge is not None and value < f.ge:
                add(errors, loc, f"must be >= {f.ge}, got {short(value)}")
            if f.le is not None and value > f.le:
                add(errors, loc, f"must be <= {f.le}, got {short(value)}")
        if self.pattern is not None and isinstance(value, str) and not self.pattern.search(value):
            add(errors, loc, f"{short(value)} does not match {f.pattern}")
        if isinstance(value, (str, list, dict)):
            if f.min_length is not None and len(value) < f.min_length:
                add(errors, loc, f"must have at least {_count(f.min_length, value)}, got {len(value)}")
            if f.max_length is not None and len(value) > f.max_length:
                add(errors, loc, f"must have at most {_count(f.max_length, value)}, got {len(value)}")
        return value

    def json_schema(self, defs: Defs) -> JsonSchema:
        schema = self.inner.json_schema(defs)
        # Optional[int] with ge=1: the bound belongs to the integer branch.
        branches = [b for b in schema.get("anyOf", ()) if b.get("type") != "null"]
        target = branches[0] if len(branches) == 1 else schema
        f = self.field
        length = _LENGTH_KEYWORDS.get(target.get("type"), ("minItems", "maxItems"))
        for keyword, value in (("minimum", f.ge), ("maximum", f.le), ("pattern", f.pattern),
                               (length[0], f.min_length), (length[1], f.max_length)):
            if value is not None:
                target[keyword] = value
        return schema


_LENGTH_KEYWORDS: dict[Any, tuple[str, str]] = {"string": ("minLength", "maxLength"),
                                               "object": ("minProperties", "maxProperties")}


def _count(n: int, value: Any) -> str:
    unit = "character" if isinstance(value, str) else "item"
    return f"{n} {unit}{'' if n == 1 else 's'}"
