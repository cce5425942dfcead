"""pipeline.schema on its own: each type, constraint and error path, and the JSON Schema it exports."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, ClassVar, Literal, Union

import pytest

from pipeline.schema import BeforeValidator, Field, Model, ValidationError


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        if not value.endswith("s"):
            raise ValueError(f"{value!r} is not a number of seconds")
        return int(value[:-1])
    return value


Seconds = Annotated[int, BeforeValidator(_seconds)]


class Inner(Model):
    """A nested mapping."""

    name: str
    size: int = Field(1, ge=1, le=10)


class Loose(Model, extra="allow"):
    kind: str = "x"
    inner: Inner = Inner(name="default")


class Sample(Model):
    count: int = Field(ge=1, le=5)
    ratio: float = 0.5
    label: str = Field("a", min_length=1, max_length=3)
    enabled: bool = False
    anything: Any = None
    os: Literal["android", "debian"] = "debian"
    fixed: Literal["tmpfs"] = "tmpfs"
    retry: int | None = Field(None, ge=1)
    command: str | list[str] | None = None
    tags: list[str] = []
    env: dict[str, int] = {}
    inner: Inner | None = None
    inners: list[Inner] = []
    wait: Seconds | None = None
    md5: str | None = Field(None, pattern=r"^[0-9a-f]{4}$")
    items_: list[int] = Field([], alias="items", min_length=0, description="some numbers")
    either: Union[Inner, Loose] | None = None  # noqa: UP007 - typing.Union is a form models may use
    limit: ClassVar[int] = 3  # a class constant, not a field
    _private: int = 0


def errors_of(model: type[Model], data: Any) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(e["loc"], e["msg"], e["type"]) for e in caught.value.errors()]


def messages(model: type[Model], data: Any) -> dict[tuple, str]:
    return {loc: msg for loc, msg, _ in errors_of(model, data)}


# ---------------------------------------------------------------- scalars


def test_valid_mapping_gives_typed_attributes():
    s = Sample.model_validate({"count": 2, "ratio": 3, "items": [1, 2], "inner": {"name": "n"}})
    assert s.count == 2
    assert s.ratio == 3.0 and isinstance(s.ratio, float)
    assert s.items_ == [1, 2]
    assert s.inner == Inner(name="n", size=1)
    assert s.label == "a" and s.enabled is False and s.os == "debian" and s.retry is None


@pytest.mark.parametrize("value,expected", [
    ("5", "expected a whole number, got str '5'"),
    (True, "expected a whole number, got true"),
    (2.5, "expected a whole number, got float 2.5"),
    (None, "expected a whole number, got null"),
    ([1], "expected a whole number, got a list"),
])
def test_int_rejects_other_types_naming_them(value, expected):
    assert messages(Sample, {"count": value}) == {("count",): expected}


def test_float_str_bool_type_errors():
    found = messages(Sample, {"count": 1, "ratio": "0.5", "label": 7, "enabled": "yes"})
    assert found == {
        ("ratio",): "expected a number, got str '0.5'",
        ("label",): "expected a string, got int 7",
        ("enabled",): "expected true or false, got str 'yes'",
    }


def test_float_rejects_bool():
    assert messages(Sample, {"count": 1, "ratio": False}) == {("ratio",): "expected a number, got false"}


def test_any_accepts_anything_unchanged():
    value = {"a": [1, {"b": None}]}
    assert Sample.model_validate({"count": 1, "anything": value}).anything == value


def test_long_values_are_shortened_in_messages():
    msg = messages(Sample, {"count": "x" * 100})[("count",)]
    assert msg.endswith("...") and len(msg) < 80


# ---------------------------------------------------------------- literal, union, optional


def test_literal_names_the_value_and_the_choices():
    assert messages(Sample, {"count": 1, "os": "windows"}) == {("os",): "'windows' is not one of android, debian"}
    assert messages(Sample, {"count": 1, "fixed": "tftp"}) == {("fixed",): "'tftp' must be tmpfs"}


def test_literal_does_not_match_a_value_of_another_type():
    class Flag(Model):
        on: Literal[1] = 1

    assert Flag.model_validate({"on": 1}).on == 1
    assert messages(Flag, {"on": True}) == {("on",): "True must be 1"}


def test_optional_accepts_null_and_skips_constraints():
    s = Sample.model_validate({"count": 1, "retry": None, "md5": None, "inner": None})
    assert s.retry is None and s.md5 is None and s.inner is None


def test_str_or_list_union():
    assert Sample.model_validate({"count": 1, "command": "reboot"}).command == "reboot"
    assert Sample.model_validate({"count": 1, "command": ["a", "b"]}).command == ["a", "b"]
    assert messages(Sample, {"count": 1, "command": 5}) == {
        ("command",): "expected a string or a list, got int 5"}


def test_union_reports_the_member_the_value_has_the_shape_of():
    # A list: only list[str] could take it, so its item is the problem.
    assert messages(Sample, {"count": 1, "command": ["a", 3]}) == {("command", 1): "expected a string, got int 3"}


def test_union_of_models_takes_the_first_that_fits():
    assert isinstance(Sample.model_validate({"count": 1, "either": {"name": "n"}}).either, Inner)
    loose = Sample.model_validate({"count": 1, "either": {"kind": "k", "other": 1}}).either
    assert isinstance(loose, Loose) and loose.other == 1


# ---------------------------------------------------------------- containers and nesting


def test_list_errors_name_the_index():
    assert messages(Sample, {"count": 1, "tags": ["a", 2, "c", None]}) == {
        ("tags", 1): "expected a string, got int 2",
        ("tags", 3): "expected a string, got null",
    }
    assert messages(Sample, {"count": 1, "tags": "a"}) == {("tags",): "expected a list, got str 'a'"}


def test_dict_errors_name_the_key():
    assert messages(Sample, {"count": 1, "env": {"A": 1, "B": "2"}}) == {
        ("env", "B"): "expected a whole number, got str '2'"}
    assert messages(Sample, {"count": 1, "env": {3: 1}}) == {("env", 3): "invalid key: expected a string, got int 3"}
    assert messages(Sample, {"count": 1, "env": ["A"]}) == {("env",): "expected a mapping, got a list"}


def test_nested_model_errors_carry_the_whole_path():
    found = messages(Sample, {"count": 1, "inners": [{"name": "ok"}, {"size": 11, "colour": "red"}]})
    assert found == {
        ("inners", 1, "name"): "required but missing",
        ("inners", 1, "size"): "must be <= 10, got 11",
        ("inners", 1, "colour"): "unknown key",
    }


def test_a_model_needs_a_mapping():
    assert messages(Sample, {"count": 1, "inner": "n"}) == {("inner",): "expected a mapping, got str 'n'"}
    assert errors_of(Inner, ["name"]) == [((), "expected a mapping, got a list", "type_error")]


def test_every_error_is_collected_at_once():
    found = errors_of(Sample, {"ratio": "x", "os": "windows", "tags": [1], "bogus": 1, "inner": {}})
    assert {loc for loc, _, _ in found} == {("count",), ("ratio",), ("os",), ("tags", 0), ("bogus",),
                                             ("inner", "name")}
    kinds = {loc: kind for loc, _, kind in found}
    assert kinds[("count",)] == "missing" and kinds[("bogus",)] == "extra_forbidden"
    assert kinds[("ratio",)] == "type_error"


# ---------------------------------------------------------------- validators and constraints


def test_before_validator_converts_first():
    assert Sample.model_validate({"count": 1, "wait": "30s"}).wait == 30
    assert Sample.model_validate({"count": 1, "wait": 4}).wait == 4


def test_before_validator_value_error_is_the_message():
    assert messages(Sample, {"count": 1, "wait": "30m"}) == {("wait",): "'30m' is not a number of seconds"}


def test_before_validator_output_is_still_type_checked():
    assert messages(Sample, {"count": 1, "wait": 1.5}) == {("wait",): "expected a whole number, got float 1.5"}


@pytest.mark.parametrize("data,place,expected", [
    ({"count": 0}, "count", "must be >= 1, got 0"),
    ({"count": 6}, "count", "must be <= 5, got 6"),
    ({"count": 1, "retry": 0}, "retry", "must be >= 1, got 0"),
    ({"count": 1, "label": ""}, "label", "must have at least 1 character, got 0"),
    ({"count": 1, "label": "abcd"}, "label", "must have at most 3 characters, got 4"),
    ({"count": 1, "md5": "xyz"}, "md5", "'xyz' does not match ^[0-9a-f]{4}$"),
])
def test_field_constraints(data, place, expected):
    assert messages(Sample, data) == {(place,): expected}


def test_min_length_of_a_list():
    class NonEmpty(Model):
        actions: list[Any] = Field(min_length=1)

    assert messages(NonEmpty, {"actions": []}) == {("actions",): "must have at least 1 item, got 0"}
    assert NonEmpty.model_validate({"actions": [1]}).actions == [1]


# ---------------------------------------------------------------- keys: required, alias, extra


def test_missing_required_field():
    assert errors_of(Inner, {}) == [(("name",), "required but missing", "missing")]


def test_an_aliased_field_is_found_by_its_alias_only():
    assert Sample.model_validate({"count": 1, "items": [1]}).items_ == [1]
    assert errors_of(Sample, {"count": 1, "items_": [2]}) == [
        (("items_",), "unknown key (the key is 'items')", "extra_forbidden")]
    assert messages(Sample, {"count": 1, "items": ["x"]}) == {("items", 0): "expected a whole number, got str 'x'"}


def test_required_alias_is_reported_by_its_alias():
    class Definition(Model):
        from_: str = Field(alias="from")

    assert messages(Definition, {}) == {("from",): "required but missing"}


def test_extra_forbidden_by_default():
    assert errors_of(Inner, {"name": "n", "nme": 1}) == [(("nme",), "unknown key", "extra_forbidden")]


def test_extra_allowed_is_kept():
    loose = Loose.model_validate({"kind": "k", "hostname": "h1", "nested": {"a": 1}})
    assert loose.hostname == "h1"
    assert loose.model_extra == {"hostname": "h1", "nested": {"a": 1}}
    assert loose.model_dump()["nested"] == {"a": 1}
    with pytest.raises(AttributeError):
        _ = loose.missing


def test_extra_must_be_forbid_or_allow():
    with pytest.raises(ValueError, match="extra must be"):
        class Wrong(Model, extra="ignore"):  # noqa: F841
            pass


def test_classvar_and_private_names_are_not_fields():
    assert messages(Sample, {"count": 1, "limit": 4, "_private": 1}) == {
        ("limit",): "unknown key", ("_private",): "unknown key"}


# ---------------------------------------------------------------- instances


def test_mutable_defaults_are_not_shared():
    a = Sample.model_validate({"count": 1})
    b = Sample.model_validate({"count": 1})
    assert a.tags == [] and a.tags is not b.tags
    assert a.env is not b.env
    x, y = Loose.model_validate({}), Loose.model_validate({})
    assert x.inner == Inner(name="default") and x.inner is not y.inner


def test_instances_are_read_only():
    s = Sample.model_validate({"count": 1})
    with pytest.raises(AttributeError, match="read-only"):
        s.count = 2
    with pytest.raises(AttributeError, match="read-only"):
        del s.count
    assert s.count == 1


def test_constructor_validates_keywords():
    assert Inner(name="n", size=2).size == 2
    with pytest.raises(ValidationError) as caught:
        Inner(size=0)
    assert {e["loc"] for e in caught.value.errors()} == {("name",), ("size",)}


def test_model_validate_returns_an_instance_as_it_is():
    inner = Inner(name="n")
    assert Inner.model_validate(inner) is inner
    assert Sample.model_validate({"count": 1, "inner": inner}).inner is inner


def test_equality_is_by_type_and_values():
    assert Inner(name="n") == Inner(name="n")
    assert Inner(name="n") != Inner(name="m")
    assert Inner(name="n") != {"name": "n", "size": 1}
    assert "Inner(name='n', size=1)" == repr(Inner(name="n"))


def test_model_copy_updates_the_copy_only():
    original = Loose.model_validate({"kind": "a", "tags": ["x"]})
    copied = original.model_copy(update={"kind": "b", "tags": ["y"]})
    assert (original.kind, original.tags) == ("a", ["x"])
    assert (copied.kind, copied.tags) == ("b", ["y"])
    with pytest.raises(ValueError, match="no field 'nope'"):
        Inner(name="n").model_copy(update={"nope": 1})


def test_model_dump_plain_data():
    s = Sample.model_validate({"count": 1, "inners": [{"name": "a"}], "items": [3],
                               "anything": datetime.date(2024, 1, 2)})
    dumped = s.model_dump()
    assert dumped["inners"] == [{"name": "a", "size": 1}]
    assert dumped["items_"] == [3] and "items" not in dumped
    assert dumped["anything"] == datetime.date(2024, 1, 2)
    assert s.model_dump(mode="json")["anything"] == "2024-01-02"
    assert s.model_dump(by_alias=True)["items"] == [3]


# ---------------------------------------------------------------- JSON Schema


def test_json_schema_shape():
    schema = Sample.model_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["title"] == "Sample"
    assert schema["required"] == ["count"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["count"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert props["ratio"] == {"type": "number", "default": 0.5}
    assert props["label"] == {"type": "string", "minLength": 1, "maxLength": 3, "default": "a"}
    assert props["os"] == {"enum": ["android", "debian"], "type": "string", "default": "debian"}
    assert props["fixed"] == {"const": "tmpfs", "type": "string", "default": "tmpfs"}
    assert props["retry"] == {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None}
    assert props["command"]["anyOf"] == [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                         {"type": "null"}]
    assert props["env"] == {"type": "object", "additionalProperties": {"type": "integer"}, "default": {}}
    assert props["anything"] == {"default": None}
    assert props["md5"]["anyOf"][0] == {"type": "string", "pattern": "^[0-9a-f]{4}$"}
    assert props["wait"]["anyOf"][0] == {"type": "integer"}
    assert props["inners"]["items"] == {"$ref": "#/$defs/Inner"}
    assert "items_" not in props and props["items"]["description"] == "some numbers"
    assert props["items"]["minItems"] == 0
    assert "limit" not in props and "_private" not in props


def test_json_schema_defs():
    schema = Sample.model_json_schema()
    assert set(schema["$defs"]) == {"Inner", "Loose"}
    inner = schema["$defs"]["Inner"]
    assert inner["required"] == ["name"] and inner["description"] == "A nested mapping."
    assert inner["properties"]["size"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}
    loose = schema["$defs"]["Loose"]
    assert loose["additionalProperties"] is True
    assert "description" not in loose  # no docstring of its own
    assert loose["properties"]["inner"] == {"$ref": "#/$defs/Inner", "default": {"name": "default", "size": 1}}
    assert schema["properties"]["either"]["anyOf"] == [
        {"$ref": "#/$defs/Inner"}, {"$ref": "#/$defs/Loose"}, {"type": "null"}]
