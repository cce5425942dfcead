"""pipeline.yamlload on its own: the same data as PyYAML's SafeLoader, within bounds, with places."""

from __future__ import annotations

import pytest
import yaml
from conftest import DEVICES, SAMPLES

from pipeline import yamlload
from pipeline.errors import YamlRejected
from pipeline.yamlload import Limits, load


def problems(text: str, **kwargs) -> list[str]:
    with pytest.raises(YamlRejected) as caught:
        load(text, **kwargs)
    return caught.value.problems


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request, monkeypatch):
    """Every bound holds with libyaml's parser and with PyYAML's own (a build without libyaml)."""
    if request.param == "pure-python":
        monkeypatch.setattr(yamlload, "LOADER", yamlload._loader_class(yamlload._PureTokens))
    return request.param


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")) + sorted(DEVICES.glob("*.yaml")), ids=lambda p: p.name)
def test_sample_files_load_as_safe_load_does(path):
    text = path.read_text()
    assert load(text) == yaml.safe_load(text)


def test_merge_keys_and_scalar_aliases_still_load(loader):
    text = "base: &b {to: tmpfs, os: debian}\ndeploy:\n  <<: *b\n  os: oe\nname: &n x\nagain: *n\n"
    assert load(text) == {"base": {"to": "tmpfs", "os": "debian"}, "deploy": {"to": "tmpfs", "os": "oe"},
                          "name": "x", "again": "x"}


@pytest.mark.parametrize("text,expected", [
    ("a: 1\na: 2\n", "(job): duplicate key 'a' (line 2; first on line 1): LAVA would keep the last value; give the key once"),
    ("x:\n  - {to: a, to: b}\n", "x[0]: duplicate key 'to' (line 2; first on line 2): LAVA would keep the last value; give the key once"),
    ("x: {'to': a, \"to\": b}\n", "x: duplicate key 'to'"),
    ("{1: a, 0x1: b}\n", "(job): duplicate key 1"),  # the same key once read: last-wins would hide one
    ("{true: a, yes: b}\n", "(job): duplicate key True"),
])
def test_duplicate_keys_are_problems(loader, text, expected):
    found = problems(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_every_duplicate_is_reported():
    assert problems("a: 1\na: 2\nb: {c: 1, c: 2}\n") == ["(job): duplicate key 'a' (line 2; first on line 1): LAVA would keep the last value; give the key once",
                                                     "b: duplicate key 'c' (line 3; first on line 3): LAVA would keep the last value; give the key once"]


def test_alias_budget_is_exact(loader):
    """Aliases may add up to the limit of nodes; one more is refused, naming the alias that went over."""
    items = "[" + ", ".join(["x"] * 99) + "]"  # 100 nodes with the list itself
    at_limit = f"a: &a {items}\nb: [{', '.join(['*a'] * 10)}]\n"
    assert len(load(at_limit, limits=Limits(max_alias_nodes=1000))["b"]) == 10
    assert problems(at_limit, limits=Limits(max_alias_nodes=999)) == [
        "b[9]: aliases expand to more than 999 nodes or 1048576 characters (line 2)"]


def test_aliases_of_long_strings_count_their_characters(loader):
    text = "a: &a '" + "x" * 1000 + "'\nb: [*a, *a, *a]\n"
    assert load(text, limits=Limits(max_bytes=3000))["b"][2] == "x" * 1000
    assert problems(text, limits=Limits(max_bytes=2999))[0].startswith("b[2]: aliases expand to more than")


@pytest.mark.parametrize("text,place", [("&a [*a]", "[0]"), ("a: &a {b: [*a]}", "a.b[0]"),
                                        ("a: &a {<<: *a}", "a.<<")])
def test_an_alias_inside_its_own_collection_is_refused(loader, text, place):
    assert problems(text) == [f"{place}: alias *a is inside the collection it names (a recursive structure) (line 1)"]


def test_depth_limit_is_exact(loader):
    assert load("[" * 100 + "]" * 100) is not None
    assert problems("[" * 101 + "]" * 101)[0].endswith(": nested deeper than 100 levels (line 1)")
    # complex keys nest too
    assert problems("? " * 101 + "x")[0].endswith("nested deeper than 100 levels (line 1)")


@pytest.mark.parametrize("text,expected", [
    ("a: 2020-13-45", "a: cannot read '2020-13-45' as timestamp: month must be in 1..12 (line 1)"),
    ("a:\n  b: !!int x", "a.b: cannot read 'x' as int: invalid literal for int() with base 10: 'x' (line 2)"),
    ("a: !!float x", "a: cannot read 'x' as float"),
    ("a: " + "9" * 5000, "a: cannot read '9999"),
    ("a: 0x" + "f" * 5000, "a: cannot read '0xfff"),
    ("? !!int x\n: 1", "(job): cannot read 'x' as int"),
    ("a: !!python/object/apply:os.system [id]", "job YAML line 1, column 4: tag not allowed"),
    ("a: [1, 2", "job YAML line "),  # libyaml and PyYAML word it differently
    ("--- a\n--- b\n", "job YAML line 2, column 1: but found another document"),
    ("a: \ud800", "job YAML: "),
])
def test_unreadable_text_is_one_problem_with_its_place(loader, text, expected):
    found = problems(text)
    assert len(found) == 1 and found[0].startswith(expected), found
    assert "\n" not in found[0]


def test_size_limit_is_in_bytes_and_set_by_the_admin(monkeypatch):
    text = "a: '" + "é" * 10 + "'\n"  # 26 bytes, 16 characters
    assert load(text, limits=Limits(max_bytes=26)) == {"a": "é" * 10}
    assert problems(text, limits=Limits(max_bytes=25)) == [
        "(job): larger than the limit of 25 bytes (LAVA_DISPATCH_MAX_JOB_BYTES)"]
    monkeypatch.setenv("LAVA_DISPATCH_MAX_JOB_BYTES", "25")
    assert problems(text, what="device", prefix="kvm01.yaml: ") == [
        "kvm01.yaml: (device): larger than the limit of 25 bytes (LAVA_DISPATCH_MAX_JOB_BYTES)"]
    monkeypatch.setenv("LAVA_DISPATCH_MAX_JOB_BYTES", "-3")
    assert "a positive whole number of bytes" in problems(text)[0]


def test_a_fetched_test_definition_is_loaded_within_the_same_bounds(tmp_path):
    from pipeline.errors import JobError
    from pipeline.overlay import load_testdef

    place = "actions[2].test.definitions[0]"
    path = tmp_path / "smoke.yaml"
    path.write_text("metadata: {name: a}\nrun: {steps: [ls]}\n")
    assert load_testdef(tmp_path, path.name, place)["run"] == {"steps": ["ls"]}
    for text, expected in [
        ("metadata: {name: a}\nmetadata: {name: b}\nrun: {steps: [ls]}\n", "duplicate key '...' (line 2; first on line 1): LAVA would keep the last value; give the key once"),
        ("a: &a [x, x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}] \n" for i in range(3))
         + "c: [" + ", ".join(["*b2"] * 6000) + "]\n", "aliases expand to more than 10000 nodes"),
        ("metadata: {name: a}\nrun: {steps: [ls]}\ninstall: {deps: [[curl]]}\n", "install.deps[0]: expected a package"),
    ]:
        path.write_text(text)
        with pytest.raises(JobError) as caught:
            load_testdef(tmp_path, path.name, place)
        assert str(caught.value).startswith(place) and expected in str(caught.value), caught.value
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(JobError, match="not UTF-8 text"):
        load_testdef(tmp_path, path.name, place)
