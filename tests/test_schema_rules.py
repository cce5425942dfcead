"""pipeline.schema's rules for annotations and keys.

Annotations are read with typing.get_type_hints, once per class; a field
with an alias answers to its alias only.

This module has no ``from __future__ import annotations``: its models'
annotations are objects, quoted forward references among them, as a model
module without the import writes them.
"""

import typing
from typing import Any, Literal, Optional

import pytest
import schema_twin_boot
from test_validation import BOOT, DEPLOY, HEAD, MULTINODE_HEAD, job

from pipeline.job import ProblemList, parse_job
from pipeline.schema import Field, Model, ValidationError


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
