"""Test definitions: where a test block's definitions come from, and the shape of one.

``TestDefinition`` is an entry of a test block's ``definitions`` (from,
repository, path, ...); ``parse_definitions`` checks each entry of a block.
``testdef_problems`` checks a Lava-Test Test Definition 1.0 itself, before
anything runs: an inline definition when the job is validated, one fetched
from a repository when it arrives. Every problem is reported with its
place; the overlay may then write run.sh and install.sh without meeting a
value of the wrong type.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pipeline.checks import key_text, regex_problem, relative_path_problem, shell_name_problem, shown
from pipeline.fields import Field, SafeName, ShellName, Strict, as_url, validate_model

PARSE_GROUPS = ("test_case_id", "result")
DEFINITION_SOURCES = ("git", "inline", "url", "tar")
PLANNED_SOURCES = ("bzr", "file")
GIT_LOCATION = re.compile(r"^(?:(?:https?|git|ssh|file)://[^\s;'\"`\\<>|$&(){}]+|/[^\s;'\"`\\<>|$&(){}]+)$")


class TestDefinition(Strict):
    __test__ = False  # not a pytest test class
    from_: Literal["git", "inline", "url", "tar"] = Field(alias="from")
    repository: Any
    path: str
    name: SafeName | None = None
    revision: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    branch: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    parameters: dict[ShellName, Any] | None = None
    params: dict[ShellName, Any] | None = None
    shallow: bool = True
    lava_signal: Literal["stdout", "kmsg"] | None = Field(None, alias="lava-signal")
    skip_install: list[Literal["keys", "sources", "deps", "steps", "git-repos", "all"]] | None = None
    expected: list[str] | None = None  # test cases the run must report: a missing one is recorded as failed
    # LAVA keys that change nothing here.
    history: bool | None = None
    recursive: bool | None = None


def parse_definitions(items: list[dict[str, Any]], place: str, problems: list[str]) -> list[TestDefinition]:
    """The definitions of the test block at ``place``; each problem is added to ``problems``."""
    out = []
    for index, item in enumerate(items):
        where = f"{place}.definitions[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        source = item.get("from")
        if source is None:
            problems.append(f"{where}.from: required but missing: the repository type is never guessed "
                            f"(one of {', '.join(DEFINITION_SOURCES)})")
            continue
        if source in PLANNED_SOURCES:
            problems.append(f"{where}.from: {shown(source)} is not supported "
                            f"(use one of {', '.join(DEFINITION_SOURCES)})")
            continue
        definition = validate_model(TestDefinition, item, where, problems)
        if definition is None:
            continue
        if definition.from_ == "inline":
            if not isinstance(definition.repository, dict):
                problems.append(f"{where}.repository: an inline definition is a mapping (metadata, run, ...)")
                continue
            found = testdef_problems(definition.repository, f"{where}.repository")
            if found:
                problems.extend(found)
                continue
        else:
            try:
                as_url(definition.repository) if definition.from_ != "git" else _git_location(definition.repository)
            except ValueError as exc:
                problems.append(f"{where}.repository: {exc}")
                continue
        path_problem = relative_path_problem(definition.path)
        if path_problem:
            problems.append(f"{where}.path: {path_problem}")
            continue
        out.append(definition)
    return out


def _git_location(value: Any) -> str:
    if not isinstance(value, str) or not GIT_LOCATION.match(value) or value.startswith("-"):
        raise ValueError(f"{shown(value, 200)} is not a git URL "
                         "(http(s)://, git://, ssh://, file:// or an absolute path)")
    return value


# ---------------------------------------------------------------- a definition's own shape


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # a step `- true` is YAML's boolean: written as it always was


def _commands(value: Any, place: str, problems: list[str], required: bool = False) -> None:
    """A list of shell commands (each a line of a script)."""
    if value is None and not required:
        return
    if not isinstance(value, list):
        problems.append(f"{place}: a list of shell commands is required, got {shown(value)}")
        return
    for index, step in enumerate(value):
        if not _scalar(step):
            problems.append(f"{place}[{index}]: expected a shell command (a string), got {shown(step)}")


def _params(value: Any, place: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{place}: expected a mapping of parameter names to values, got {shown(value)}")
        return
    for key in value:
        problem = shell_name_problem(key)
        if problem:
            problems.append(f"{place}.{key_text(key)}: {problem}")


def testdef_problems(data: Any, place: str) -> list[str]:
    """Every problem of the test definition ``data`` (found at ``place``); empty when it is usable."""
    if not isinstance(data, dict):
        return [f"{place}: a test definition is a mapping with metadata and run"]
    problems: list[str] = []
    metadata = data.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        problems.append(f"{place}.metadata.name: required")
    elif not _scalar(metadata["name"]):
        problems.append(f"{place}.metadata.name: expected a name (a string), got {shown(metadata['name'])}")
    run = data.get("run")
    if not isinstance(run, dict):
        problems.append(f"{place}.run.steps: a list of shell commands is required")
    else:
        _commands(run.get("steps"), f"{place}.run.steps", problems, required=True)
    install = data.get("install") or {}
    if not isinstance(install, dict):
        problems.append(f"{place}.install: expected a mapping with steps and/or deps, got {shown(install)}")
    else:
        _commands(install.get("steps"), f"{place}.install.steps", problems)
        deps = install.get("deps")
        if deps is not None and not isinstance(deps, list):
            problems.append(f"{place}.install.deps: expected a list of package names, got {shown(deps)}")
        for index, dep in enumerate(deps if isinstance(deps, list) else []):
            if not isinstance(dep, str) or not dep.strip():
                problems.append(f"{place}.install.deps[{index}]: expected a package name (a string), got {shown(dep)}")
            elif dep.startswith("-"):  # it would be an option of the package manager, not a package
                problems.append(f"{place}.install.deps[{index}]: not a package name: {shown(dep)}")
    parse = data.get("parse") or {}
    if not isinstance(parse, dict):
        problems.append(f"{place}.parse: expected a mapping with pattern and fixupdict, got {shown(parse)}")
    else:
        _parse(parse, f"{place}.parse", problems)
    for key in ("params", "parameters"):
        if data.get(key) is not None:
            _params(data[key], f"{place}.{key}", problems)
    return problems


def _parse(parse: dict[Any, Any], place: str, problems: list[str]) -> None:
    pattern = parse.get("pattern")
    if pattern:
        problem = regex_problem(pattern)
        if problem:
            problems.append(f"{place}.pattern: {problem}")
        else:
            missing = [group for group in PARSE_GROUPS if group not in re.compile(pattern).groupindex]
            if missing:
                problems.append(f"{place}.pattern: needs the named groups {', '.join(missing)}")
    fixupdict = parse.get("fixupdict")
    if fixupdict is None:
        return
    if not isinstance(fixupdict, dict):
        problems.append(f"{place}.fixupdict: expected a mapping of printed results to pass, fail, skip or "
                        f"unknown, got {shown(fixupdict)}")
        return
    for key, value in fixupdict.items():
        if not _scalar(value):
            problems.append(f"{place}.fixupdict.{key_text(key)}: expected a result (a string), got {shown(value)}")
