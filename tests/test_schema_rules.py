"""pipeline.schema's rules for annotations, keys and problems.

Annotations are read with typing.get_type_hints, once per class; a field
with an alias answers to its alias only; no value makes validation raise
anything but ValidationError (converters on every path, constraints on
values they cannot measure).

This module has no ``from __future__ import annotations``: its models'
annotations are objects, quoted forward references among them, as a model
module without the import writes them.
"""

import typing
from typing import Annotated, Any, Literal, Optional

import pytest
import schema_twin_boot
from hypothesis import given, settings
from hypothesis import strategies as st
from test_validation import BOOT, DEPLOY, HEAD, MULTINODE_HEAD, job

from pipeline.errors import ProblemList
from pipeline.parser import parse_job
from pipeline.schema import BeforeValidator, Field, Model, ValidationError


def errors_of(model: type[Model], data: Any) -> list[tuple[tuple[Any, ...], str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(e["loc"], e["msg"], e["type"]) for e in caught.value.errors()]


# ---------------------------------------------------------------- annotations


class Tree(Model):
    name: str
    children: list["Tree"] = []
    parent: Optional["Tree"] = None  # noqa: UP045 - Optional with a quoted name is a form models may use
    leaves: dict[str, "Leaf"] = {}
    first: "Leaf | None" = None


class Leaf(Model):
    colour: Literal["green", "red"] = "green"


def test_quoted_forward_references_inside_types_are_resolved():
    tree = Tree.model_validate({"name": "root", "children": [{"name": "a", "leaves": {"x": {"colour": "red"}}}],
                                "parent": {"name": "up"}, "first": {}})
    assert tree.children[0].leaves["x"] == Leaf(colour="red")
    assert tree.parent == Tree(name="up") and tree.first == Leaf()
    assert errors_of(Tree, {"name": "r", "children": [{"name": 1}], "leaves": {"x": {"colour": "blue"}}}) == [
        (("children", 0, "name"), "expected a string, got int 1", "type_error"),
        (("leaves", "x", "colour"), "'blue' is not one of green, red", "value_error"),
    ]


def test_annotations_are_read_at_first_validation_and_kept():
    class Unresolved(Model):
        thing: "NotDefinedYet"  # noqa: F821 - resolved only when validating

    assert "_plan_cache" not in Unresolved.__dict__
    with pytest.raises(TypeError, match="Unresolved.thing: cannot resolve 'NotDefinedYet'"):
        Unresolved.model_validate({"thing": 1})

    Leaf.model_validate({})
    plan = Leaf.__dict__["_plan_cache"]
    Leaf.model_validate({"colour": "red"})
    assert Leaf.__dict__["_plan_cache"] is plan


def test_subclass_fields_follow_the_base_fields():
    class Base(Model):
        a: int
        b: int = 1

    class Child(Base):
        c: str
        b: int = 2  # a new default keeps the base's place

    child = Child.model_validate({"a": 1, "c": "x"})
    assert list(child.model_dump()) == ["a", "b", "c"]
    assert child.b == 2
    assert Base.model_validate({"a": 1}).b == 1


def test_each_class_reads_its_own_annotations_once(monkeypatch):
    resolved: list[str] = []
    get_type_hints = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        resolved.append(obj.__name__)
        return get_type_hints(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)

    class Base(Model):
        a: int = 0

    class One(Base):
        b: int = 0

    class Two(Base):
        c: int = 0

    assert resolved == []  # not at class creation
    One.model_validate({"b": 1})
    One.model_validate({})
    Two.model_validate({"a": 2})
    Base.model_validate({})
    assert sorted(resolved) == ["Base", "One", "Two"]  # the base once, though two classes use its fields
    assert list(Two.model_validate({}).model_dump()) == ["a", "c"]


class Later(schema_twin_boot.Boot):
    """Its base's annotation names Seconds, which only the base's module has."""

    retries: int = 0


def test_a_base_annotation_is_resolved_in_the_base_module():
    assert "Seconds" not in globals()
    assert Later.model_validate({"timeout": "30s", "retries": 2}).timeout == 30


class Shadows(Model):
    list: "list[str]" = []  # a field named after a type: the annotation still means the type
    int: "int | None" = None
    tags: "list[int]" = []


def test_a_field_does_not_hide_the_type_of_its_name():
    shadows = Shadows.model_validate({"list": ["a"], "int": 3, "tags": [1]})
    assert (shadows.list, shadows.int, shadows.tags) == (["a"], 3, [1])
    assert errors_of(Shadows, {"tags": ["x"]}) == [(("tags", 0), "expected a whole number, got str 'x'", "type_error")]


def test_an_unresolvable_annotation_names_its_field():
    class Broken(Model):
        fine: int = 0
        bad: "list[Nowhere]" = []  # noqa: F821

    with pytest.raises(TypeError, match=r"Broken.bad: cannot resolve 'list\[Nowhere\]': name 'Nowhere' is not def"):
        Broken.model_validate({})


# ---------------------------------------------------------------- aliases


class Definition(Model):
    from_: str = Field(alias="from")
    lava_signal: Optional[str] = Field(None, alias="lava-signal")  # noqa: UP045


class KeepsExtras(Model, extra="allow"):
    from_: str = Field("git", alias="from")


def test_an_aliased_field_answers_to_its_alias_only():
    assert Definition.model_validate({"from": "git", "lava-signal": "kmsg"}).lava_signal == "kmsg"
    assert errors_of(Definition, {"from_": "git", "lava_signal": "kmsg"}) == [
        (("from",), "required but missing", "missing"),
        (("from_",), "unknown key (the key is 'from')", "extra_forbidden"),
        (("lava_signal",), "unknown key (the key is 'lava-signal')", "extra_forbidden"),
    ]


def test_a_model_that_keeps_extra_keys_refuses_a_field_name_all_the_same():
    kept = KeepsExtras.model_validate({"from": "url", "other": 1})
    assert kept.from_ == "url" and kept.model_extra == {"other": 1}
    assert errors_of(KeepsExtras, {"from_": "url", "other": 1}) == [
        (("from_",), "unknown key (the key is 'from')", "extra_forbidden")]


def test_the_constructor_takes_keys_and_a_dump_by_alias_validates_again():
    definition = Definition(**{"from": "git"})
    assert definition.from_ == "git"
    assert Definition.model_validate(definition.model_dump(by_alias=True)) == definition
    with pytest.raises(ValidationError, match="unknown key"):
        Definition(from_="git")


@pytest.mark.parametrize("text,problem", [
    (job(MULTINODE_HEAD.replace("lava-multinode:", "lava_multinode:"), BOOT),
     "protocols.lava_multinode: unknown key (the key is 'lava-multinode')"),
    (job(HEAD, DEPLOY.replace("os: debian", "os: debian\n      connection_namespace: a"), BOOT),
     "actions[0].deploy.connection_namespace: unknown key (the key is 'connection-namespace')"),
], ids=["protocols", "action"])
def test_a_job_that_writes_a_python_name_is_rejected(text, problem):
    with pytest.raises(ProblemList) as caught:
        parse_job(text)
    assert problem in caught.value.problems


# ---------------------------------------------------------------- converters on every path


def failing(exc: Exception) -> BeforeValidator:
    def convert(value: Any) -> Any:
        if value == "bad":
            raise exc
        return value
    return BeforeValidator(convert)


class Part(Model):
    w: Annotated[str, failing(TypeError("no part"))] = "ok"


def model_of(tp: Any, default: Any = None) -> type[Model]:
    return type("Holder", (Model,), {"__annotations__": {"v": tp}, "v": default, "__module__": __name__})


def paths(convert: BeforeValidator) -> list[tuple[str, Any, Any, Any, tuple[Any, ...], str]]:
    """(where, annotation, default, value, place of the problem, how its message starts)."""
    conv_str = Annotated[str, convert]
    return [
        ("field", conv_str, None, "bad", ("v",), ""),
        ("list item", list[conv_str], None, ["ok", "bad"], ("v", 1), ""),
        ("dict key", dict[conv_str, int], None, {"bad": 1}, ("v", "bad"), "invalid key: "),
        ("dict value", dict[str, conv_str], None, {"k": "bad"}, ("v", "k"), ""),
        ("union member", conv_str | list[str], None, "bad", ("v",), ""),
        ("optional", Optional[conv_str], None, "bad", ("v",), ""),  # noqa: UP045
        ("literal", Annotated[Literal["ok", "bad"], convert], None, "bad", ("v",), ""),
        ("in front of a model", Annotated[Part, convert], None, "bad", ("v",), ""),
        ("list of models", list[Annotated[Part, convert]], None, [{}, "bad"], ("v", 1), ""),
        ("under a constraint", conv_str, Field(None, min_length=1), "bad", ("v",), ""),
    ]


EXCEPTIONS = [TypeError("a type it cannot use"), ValueError("a value it cannot use"),
              OverflowError("too big"), ZeroDivisionError("divided by zero")]


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("where", [path[0] for path in paths(failing(TypeError()))])
def test_a_converter_error_is_the_problem_of_its_value_on_every_path(exc, where):
    _, tp, default, value, place, prefix = next(path for path in paths(failing(exc)) if path[0] == where)
    assert errors_of(model_of(tp, default), {"v": value}) == [(place, prefix + str(exc), "value_error")]


def test_a_converter_error_in_a_nested_model_carries_the_whole_path():
    assert errors_of(model_of(list[Part]), {"v": [{}, {"w": "bad"}]}) == [(("v", 1, "w"), "no part", "value_error")]


def test_a_converter_error_without_a_message_names_the_value():
    assert errors_of(model_of(Annotated[str, failing(TypeError())]), {"v": "bad"}) == [
        (("v",), "cannot use str 'bad'", "value_error")]


# ---------------------------------------------------------------- constraints on any value


def _same(value: Any) -> Any:
    return value


class Bounded(Model):
    anything: Any = Field(None, ge=1, max_length=2)
    either: int | str = Field(1, ge=1)
    sized: int | list[int] = Field(1, min_length=1)
    converted: Annotated[Any, BeforeValidator(_same)] = Field(None, pattern="^a")


@pytest.mark.parametrize("data", [
    {"anything": 5}, {"anything": True}, {"anything": "ab"}, {"anything": {"a": 1}}, {"either": "x"},
    {"sized": 5}, {"sized": [1]}, {"converted": 3}, {"converted": "abc"}, {"converted": ["b"]},
])
def test_a_constraint_leaves_alone_values_it_cannot_measure(data):
    assert Bounded.model_validate(data).model_dump()[next(iter(data))] == next(iter(data.values()))


@pytest.mark.parametrize("data,place,message", [
    ({"anything": 0}, "anything", "must be >= 1, got 0"),
    ({"anything": "abc"}, "anything", "must have at most 2 characters, got 3"),
    ({"anything": [1, 2, 3]}, "anything", "must have at most 2 items, got 3"),
    ({"either": 0}, "either", "must be >= 1, got 0"),
    ({"sized": []}, "sized", "must have at least 1 item, got 0"),
    ({"converted": "b"}, "converted", "'b' does not match ^a"),
])
def test_a_constraint_checks_values_it_can_measure(data, place, message):
    assert errors_of(Bounded, data) == [((place,), message, "value_error")]


# ---------------------------------------------------------------- anything at all


def _picky(value: Any) -> Any:
    """A converter that meets trouble with many values, as careless ones do."""
    if isinstance(value, str):
        return int(value)  # ValueError
    if isinstance(value, float):
        return 1 // int(value)  # ZeroDivisionError, OverflowError, ValueError (NaN)
    if isinstance(value, list):
        return sum(value)  # TypeError
    return value


Picky = Annotated[Any, BeforeValidator(_picky)]


class Everything(Model):
    number: Picky = Field(None, ge=0, le=10, min_length=1)
    items: list[Picky] = Field([], max_length=3)
    table: dict[str, Picky | Part] = {}
    choice: Annotated[Literal[1, 2], BeforeValidator(_picky)] | None = None
    part: Part | None = None
    parts: list[Annotated[Part, BeforeValidator(_picky)]] = []


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.sampled_from(["bad", "1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3) | st.sampled_from(["w"]),
                                                                 inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["number", "items", "table", "choice", "part", "parts", "other"]), VALUES))
def test_any_input_gives_an_instance_or_problems(data):
    try:
        Everything.model_validate(data)
    except ValidationError as exc:
        assert all(error["msg"] and isinstance(error["loc"], tuple) for error in exc.errors())
