"""The exported JSON Schema keys each model once under ``$defs``: two models of one name stay two.

tests/schema_twin_boot.py and tests/schema_twin_deploy.py each have a
``Parameters``; a model using both gets two definitions, each keyed by its
module and name, and every reference leads to the right one. A name only
one model has stays the key, as in the job schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import schema_twin_boot
import schema_twin_deploy

from pipeline.parser import job_json_schema
from pipeline.schema import Model


class Action(Model):
    boot: schema_twin_boot.Parameters | None = None
    deploy: schema_twin_deploy.Parameters | None = None
    image: schema_twin_deploy.Image | None = None
    later: list[schema_twin_deploy.Parameters] = []


def refs(schema: Any) -> list[str]:
    """Every $ref in ``schema``."""
    if isinstance(schema, dict):
        own = [schema["$ref"]] if isinstance(schema.get("$ref"), str) else []
        return own + [ref for value in schema.values() for ref in refs(value)]
    if isinstance(schema, list):
        return [ref for value in schema for ref in refs(value)]
    return []


def test_two_models_of_one_name_get_a_definition_each():
    schema = Action.model_json_schema()
    defs = schema["$defs"]
    assert set(defs) == {"schema_twin_boot__Parameters", "schema_twin_deploy__Parameters", "Image"}
    boot, deploy = defs["schema_twin_boot__Parameters"], defs["schema_twin_deploy__Parameters"]
    assert boot["title"] == deploy["title"] == "Parameters"
    assert boot["required"] == ["method"] and boot["description"] == "How the board boots."
    assert deploy["required"] == ["to"] and deploy["description"] == "Where the image goes."
    props = schema["properties"]
    assert props["boot"]["anyOf"][0] == {"$ref": "#/$defs/schema_twin_boot__Parameters"}
    assert props["deploy"]["anyOf"][0] == {"$ref": "#/$defs/schema_twin_deploy__Parameters"}
    assert props["later"]["items"] == {"$ref": "#/$defs/schema_twin_deploy__Parameters"}
    assert boot["properties"]["retry"]["anyOf"][0] == {"$ref": "#/$defs/schema_twin_boot__Parameters"}  # itself
    assert props["image"]["anyOf"][0] == {"$ref": "#/$defs/Image"}  # a name of its own stays the key


def test_every_reference_leads_to_a_definition_and_files_validate_against_the_right_one():
    schema = Action.model_json_schema()
    assert {ref.removeprefix("#/$defs/") for ref in refs(schema)} == set(schema["$defs"])
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate({"boot": {"method": "qemu", "wait": 3, "retry": {"method": "minimal"}},
                        "deploy": {"to": "tmpfs", "image": "x.img"}, "later": [{"to": "usb"}]})
    for wrong in ({"boot": {"to": "tmpfs"}}, {"deploy": {"method": "qemu"}}, {"later": [{"method": "qemu"}]},
                  {"boot": {"method": "qemu", "retry": {"to": "tmpfs"}}}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(wrong)


def _part() -> type[Model]:
    class Part(Model):
        n: int = 0

    return Part


First, Second = _part(), _part()  # one module, one qualified name, two classes


class Both(Model):
    first: First
    second: Second


def test_two_classes_of_one_module_and_name_are_numbered():
    schema = Both.model_json_schema()
    key = f"{__name__.replace('.', '__')}___part__locals__Part"
    assert set(schema["$defs"]) == {key, f"{key}_2"}
    assert schema["properties"]["first"] != schema["properties"]["second"]
    assert {ref.removeprefix("#/$defs/") for ref in refs(schema)} == set(schema["$defs"])


def test_the_job_schema_keeps_its_plain_keys():
    defs = job_json_schema()["$defs"]
    assert {"_ActionItemSchema", "DeployTmpfs", "BootQemu", "TestBlock", "ImageSpec", "MultinodeRole"} <= set(defs)
    assert not [key for key in defs if "__" in key]
    assert {ref.removeprefix("#/$defs/") for ref in refs(job_json_schema())} <= set(defs)
