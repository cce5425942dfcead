"""Property-based fuzzing of job (and device) loading and validation.

Whatever the text, `lava-dispatch validate` answers with a job or with
problems: the loader and validators never raise anything but ProblemList,
every problem is one line that starts with its place, and a valid job's
pipeline builds and prints on any sample device. Inputs: arbitrary YAML
documents (nested mappings and lists of odd strings, huge integers, NaN
and infinities, shared and recursive references that dump as aliases),
raw text, and every sample job and device mutated (a key deleted, a value
replaced by one of another type, a key duplicated, aliases inserted, the
text garbled).

`make test` runs the "ci" profile: 300 mutated jobs, 100 of each other
kind, a few seconds. A long run (20,000 mutated jobs, 6,666 of each other
kind; about five minutes):

    HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_fuzz_validate.py

A failure prints the smallest input found and a @reproduce_failure line.
"""

from __future__ import annotations

import copy
import os
import re

import pytest
import yaml
from conftest import DEVICES, SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.device import Device, load_device, parse_device
from pipeline.errors import ProblemList
from pipeline.job import Job
from pipeline.parser import parse_job
from pipeline.runner import describe_pipeline

settings.register_profile("ci", max_examples=300, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=20_000)
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
LIGHT = settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 3))  # random text finds less: fewer examples

SAMPLE_JOBS = {path.name: path.read_text() for path in sorted(SAMPLES.glob("*.yaml"))}
SAMPLE_JOB_TREES = {name: yaml.safe_load(text) for name, text in SAMPLE_JOBS.items()}
SAMPLE_DEVICE_TREES = {path.name: yaml.safe_load(path.read_text()) for path in sorted(DEVICES.glob("*.yaml"))}
SAMPLE_DEVICES = [load_device(path) for path in sorted(DEVICES.glob("*.yaml"))]
# A problem starts with its place ("actions[0].deploy.to", "(job)", "job YAML line 3, column 1") then ": ".
PLACE = re.compile(r"^[^\s:][^\n]*?: \S")

# ---------------------------------------------------------------- values

WORDS = ["job_name", "device_type", "timeouts", "job", "action", "actions", "connection", "minutes", "seconds",
         "deploy", "boot", "test", "repeat", "submit", "to", "tmpfs", "tftp", "usb", "method", "qemu", "u-boot",
         "minimal", "os", "debian", "image", "images", "url", "definitions", "from", "inline", "git", "url",
         "repository", "path", "name", "parameters", "params", "metadata", "run", "steps", "install", "deps",
         "parse", "pattern", "fixupdict", "prompts", "auto_login", "login_prompt", "count", "failure_retry", "role",
         "protocols", "lava-multinode", "roles", "request", "lava-start", "expect_role", "messageID", "priority",
         "commands", "type", "bootz", "constants", "shell-prompts", "<<"]
ODD_STRINGS = ["", " ", "\t", "\n", "\x00", "\x1b[31m", "~", "null", "yes", "no", "0x1f", "0o17", "1e999", ".nan",
               "-.inf", "1:30:00", "2020-13-45", "!!python/object:os.system", "*a", "&a", "'", '"', "\\", "{", "[",
               "a" * 5000, "\u202e", "\ufeff", "\U0001f4a5", "MY-VAR", "1abc", "..", ".", "/", "/etc/passwd",
               "../../x", "a/../../b", "(", "[a-", "*", "a{99999999999}", "(" * 300, "(?P<x>a)(?P<x>b)",
               "http://e.com/a;reboot", "file:///etc/passwd", "http://e.com/x.img.gz", "2m", "99999999999999999999s",
               "1h30m", "0s", "-", "--help", "$(reboot)", "`id`", "a\nb", "lava-test-case x --shell true"]
ODD_NUMBERS = [0, 1, -1, 2, 64, 65, 100, 101, 1000, 1001, 2**31, 2**63, 2**64, 10**20, 10**4000, -(10**4000),
               0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf")]

KEYS = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.sampled_from(ODD_STRINGS),
                 st.integers(-5, 5), st.booleans(), st.none(), st.floats(allow_nan=True))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(ODD_NUMBERS),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(ODD_STRINGS), st.sampled_from(WORDS))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(value: object, flow: bool = False) -> str:
    """YAML text of ``value``; objects that occur twice (or inside themselves) become anchors and aliases."""
    return yaml.dump(value, Dumper=DUMPER, sort_keys=False, default_flow_style=flow, allow_unicode=True, width=80)


# ---------------------------------------------------------------- the property checked


def check(text: str, device: Device | None) -> str:
    """Validate as `lava-dispatch validate` does; only ProblemList may come out, each problem with its place."""
    try:
        job = parse_job(text)
        if device is not None:
            build_on(job, device)
    except ProblemList as exc:
        assert exc.problems, "a rejection without problems"
        for problem in exc.problems:
            assert isinstance(problem, str) and PLACE.match(problem), f"no place: {problem!r}"
            assert "\n" not in problem, f"a problem on several lines: {problem!r}"
        return "rejected"
    return "valid"


def build_on(job: Job, device: Device) -> None:
    multinode = job.multinode
    roles = [role for role, spec in multinode.roles.items() if spec.device_type == device.device_type] \
        if multinode else [None]
    for role in roles:
        yaml.safe_dump({"pipeline": describe_pipeline(job, device, role)}, sort_keys=False)


# ---------------------------------------------------------------- mutations


def locations(value: object) -> list[tuple[object, object]]:
    """Every (container, key or index) in the tree, each container once."""
    found, stack, seen = [], [value], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            found.append((node, key))
            stack.append(child)
    return found


def laughs(levels: int) -> list:
    """A "billion laughs": each level lists the one below ten times (aliases in YAML)."""
    value: list = ["lol"] * 10
    for _ in range(levels):
        value = [value] * 10
    return value


def deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = {"a": value} if levels % 2 else [value]
    return value


def mutate(data: st.DataObject, tree: object) -> object:
    """Apply one random mutation in place (or return a new tree)."""
    spots = locations(tree)
    if not spots:
        return data.draw(VALUES)
    container, key = spots[data.draw(st.integers(0, len(spots) - 1))]
    kind = data.draw(st.sampled_from(["delete", "replace", "replace", "share", "recurse", "laughs", "deep"]))
    if kind == "delete":
        del container[key]
    elif kind == "replace":
        container[key] = data.draw(VALUES)
    elif kind == "share":  # the same object in two places: an anchor and an alias in the text
        other, other_key = spots[data.draw(st.integers(0, len(spots) - 1))]
        container[key] = other[other_key]
    elif kind == "recurse":  # a collection inside itself: an alias to its own anchor
        target = container[key] if isinstance(container[key], (dict, list)) else container
        if isinstance(target, dict):
            target[data.draw(st.sampled_from(WORDS))] = target
        else:
            target.append(target)
    elif kind == "laughs":
        container[key] = laughs(data.draw(st.integers(2, 6)))
    else:
        container[key] = deep(data.draw(st.integers(95, 130)))
    return tree


INSERTS = ["&a ", "*a", "!!int ", "? ", "- ", ": ", "{", "]", "\t", "<<: *a\n", "\x00", "%YAML 1.1\n", "---\n",
           "!!binary "]


def mutate_text(data: st.DataObject, text: str) -> str:
    """Text-level changes: a key line duplicated in its mapping, bytes inserted or cut, a huge integer."""
    kind = data.draw(st.sampled_from(["none", "none", "duplicate", "insert", "cut", "hexint"]))
    lines = text.splitlines(keepends=True)
    if kind == "duplicate":
        keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_][\w-]*: \S", line)]
        if keyed:
            i = data.draw(st.sampled_from(keyed))
            lines.insert(i + 1, lines[i])
        return "".join(lines)
    if kind in ("insert", "cut") and text:
        at = data.draw(st.integers(0, len(text)))
        if kind == "cut":
            return text[:at] + text[at + data.draw(st.integers(1, 40)):]
        return text[:at] + data.draw(st.sampled_from(INSERTS)) + text[at:]
    if kind == "hexint":
        return text + "\nbig: 0x" + "f" * 5000 + "\n"
    return text


# ---------------------------------------------------------------- properties

DEVICE_OR_NONE = st.one_of(st.none(), st.sampled_from(SAMPLE_DEVICES))


@FUZZ
@given(data=st.data())
def test_mutated_sample_jobs_give_a_job_or_problems(data):
    tree = copy.deepcopy(SAMPLE_JOB_TREES[data.draw(st.sampled_from(sorted(SAMPLE_JOB_TREES)))])
    for _ in range(data.draw(st.integers(1, 4))):
        tree = mutate(data, tree)
    text = mutate_text(data, dump(tree, flow=data.draw(st.booleans())))
    check(text, data.draw(DEVICE_OR_NONE))


@LIGHT
@given(value=VALUES, flow=st.booleans(), device=DEVICE_OR_NONE)
def test_arbitrary_documents_give_problems(value, flow, device):
    assert check(dump(value, flow), device) == "rejected"  # nothing random is a whole job


@LIGHT
@given(text=st.one_of(st.text(max_size=300), st.sampled_from(ODD_STRINGS)), device=DEVICE_OR_NONE)
def test_arbitrary_text_gives_problems(text, device):
    assert check(text, device) == "rejected"


@LIGHT
@given(data=st.data())
def test_mutated_sample_devices_give_a_device_or_problems(data):
    """A device file is the lab's, but a broken one still gets problems, never a traceback."""
    name = data.draw(st.sampled_from(sorted(SAMPLE_DEVICE_TREES)))
    tree = copy.deepcopy(SAMPLE_DEVICE_TREES[name])
    for _ in range(data.draw(st.integers(1, 3))):
        tree = mutate(data, tree)
    text = mutate_text(data, dump(tree))
    try:
        device = parse_device(text, name)
    except ProblemList as exc:
        assert exc.problems and all(PLACE.match(p) and "\n" not in p for p in exc.problems), exc.problems
        return
    check(SAMPLE_JOBS[data.draw(st.sampled_from(sorted(SAMPLE_JOBS)))], device)


@pytest.mark.parametrize("name", sorted(SAMPLE_JOBS))
def test_every_sample_job_survives_the_round_trip_the_fuzzer_starts_from(name):
    """The mutations start from the sample as the dumper writes it: unmutated, it is still valid."""
    assert check(dump(SAMPLE_JOB_TREES[name]), None) == "valid"

