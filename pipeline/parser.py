"""Reading a job: YAML in, a validated Job out, or every problem with its place.

Validation happens before anything runs and reports every problem at once,
each with its place in the job (``actions[1].boot.method: ...``). Which
methods a block may name, and the model that checks its keys, come from the
registry of methods (pipeline.registry, filled by pipeline.builtin); so
does the JSON Schema ``job_json_schema()`` exports for editors.
"""

from __future__ import annotations

import functools
import operator
import types
from typing import Any

from pipeline.blocks import MULTINODE_REQUESTS, ActionBase, ActionBlock, RepeatBlock
from pipeline.builtin import load_builtin
from pipeline.checks import key_text, shown
from pipeline.errors import ProblemList, ValidationError
from pipeline.fields import SAFE_NAME, Field, Strict, load_yaml, problem_lines, validate_model
from pipeline.job import Job, JobHeader
from pipeline.registry import KINDS, Registry
from pipeline.schema import Model
from pipeline.testdef import TestDefinition

TOP_LEVEL = ("deploy", "boot", "test", "command", "repeat", "submit")
IN_REPEAT = ("boot", "test")


def parse_job(text: str, registry: Registry | None = None) -> Job:
    """Parse and validate a job; raise ProblemList with every problem found."""
    registry = registry or load_builtin()
    data = load_yaml(text, "job")
    if not isinstance(data, dict):
        raise ProblemList(["(job): the job must be a YAML mapping with job_name, device_type, timeouts, actions"])
    problems: list[str] = []
    try:
        header: JobHeader | None = JobHeader.model_validate(data)
    except ValidationError as exc:
        problems.extend(problem_lines(exc, ""))
        header = None
    blocks: list[ActionBlock | RepeatBlock] = []
    raw_actions = data.get("actions")
    if isinstance(raw_actions, list):
        for index, item in enumerate(raw_actions):
            place = f"actions[{index}]"
            picked = _single_key(item, place, TOP_LEVEL, problems)
            if picked is None:
                continue
            kind, body = picked
            if kind == "repeat":
                repeat = _parse_repeat(body, f"{place}.repeat", problems, registry)
                if repeat:
                    blocks.append(repeat)
                continue
            block = _parse_action(kind, body, f"{place}.{kind}", problems, False, registry)
            if block:
                blocks.append(block)
    if header is None:
        raise ProblemList(problems)
    multinode = header.protocols.lava_multinode if header.protocols else None
    if multinode is not None and not multinode.subjob:
        if header.device_type:
            problems.append("device_type: a multinode job gives the device type of each role in "
                            "protocols.lava-multinode.roles, not at the top")
        for name, role in multinode.roles.items():
            if role.device_type is None:
                problems.append(f"protocols.lava-multinode.roles.{name}.device_type: required but missing")
    elif multinode is None and not header.device_type:
        problems.append("device_type: required but missing")
    job = Job(header, blocks, data, text)
    _check_job_rules(job, problems)  # every problem at once, whatever else was found
    if problems:
        raise ProblemList(problems)
    return job


def _single_key(item: Any, place: str, allowed: tuple[str, ...], problems: list[str]) -> tuple[str, Any] | None:
    if not isinstance(item, dict) or len(item) != 1:
        problems.append(f"{place}: each action is a mapping with exactly one of {', '.join(allowed)}")
        return None
    kind, body = next(iter(item.items()))
    if kind not in allowed:
        problems.append(f"{place}: {shown(kind)} is not one of {', '.join(allowed)}")
        return None
    return kind, body


def _method_model(kind: str, body: Any, place: str, problems: list[str], registry: Registry) -> type[Model] | None:
    """The model of the block's method: the kind's one model (test, submit), or the one its selector names."""
    selector = KINDS[kind]
    if selector is None:
        model = registry.model_for(kind)
        if model is None:
            problems.append(f"{place}: this dispatcher has no method for {kind} blocks")
        elif issubclass(model, ActionBase) and not isinstance(body, dict):
            problems.append(f"{place}: expected a mapping of parameters")
            return None
        return model
    if not isinstance(body, dict):
        problems.append(f"{place}: expected a mapping of parameters")
        return None
    choices = registry.choices(kind)
    value = body.get(selector)
    if value is None:
        problems.append(f"{place}.{selector}: required but missing (one of {', '.join(choices)})")
        return None
    model = registry.model_for(kind, value) if isinstance(value, str) else None
    if model is None:
        problems.append(f"{place}.{selector}: {shown(value)} is not one of {', '.join(choices)}")
    return model


def _parse_action(kind: str, body: Any, place: str, problems: list[str], in_repeat: bool,
                  registry: Registry) -> ActionBlock | None:
    model = _method_model(kind, body, place, problems, registry)
    if model is None:
        return None
    if not issubclass(model, ActionBase):  # a block taken as written (submit)
        taken = validate_model(model, body or {}, place, problems)
        return None if taken is None else ActionBlock(kind, taken, place, body or {})
    before = len(problems)
    params = validate_model(model, body, place, problems)
    if not isinstance(params, ActionBase):
        return None
    block = ActionBlock(kind, params, place, body)
    params.read_parts(block, problems)
    if params.failure_retry and params.repeat:
        problems.append(f"{place}: failure_retry and repeat cannot be used on the same action")
    if kind == "deploy" and params.repeat:
        problems.append(f"{place}.repeat: deploy does not support repeat (failure_retry is allowed)")
    if in_repeat and params.repeat:
        problems.append(f"{place}.repeat: an action inside a repeat block cannot repeat again")
    problems.extend(params.rules(place))
    return block if len(problems) == before else None


def _parse_repeat(body: Any, place: str, problems: list[str], registry: Registry) -> RepeatBlock | None:
    if not isinstance(body, dict):
        problems.append(f"{place}: expected a mapping with count and actions")
        return None
    unknown = sorted(set(body) - {"count", "actions"}, key=str)
    for key in unknown:
        problems.append(f"{place}.{key_text(key)}: unknown key")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        problems.append(f"{place}.count: a whole number from 1 to 1000 is required")
    inner = body.get("actions")
    if not isinstance(inner, list) or not inner:
        problems.append(f"{place}.actions: a non-empty list of boot and test actions is required")
        return None
    actions = []
    for index, item in enumerate(inner):
        where = f"{place}.actions[{index}]"
        if isinstance(item, dict) and len(item) == 1 and next(iter(item)) not in IN_REPEAT \
                and next(iter(item)) in TOP_LEVEL:
            problems.append(f"{where}: only boot and test actions are supported inside repeat blocks")
            continue
        picked = _single_key(item, where, IN_REPEAT, problems)
        if picked:
            block = _parse_action(picked[0], picked[1], f"{where}.{picked[0]}", problems, True, registry)
            if block:
                actions.append(block)
    if unknown or not isinstance(count, int) or len(actions) != len(inner):
        return None
    return RepeatBlock(count, actions, place)


# ---------------------------------------------------------------- rules across the job


def _check_job_rules(job: Job, problems: list[str]) -> None:
    header = job.header
    job_seconds = header.timeouts.job
    named = dict(header.timeouts.actions)
    for key in ("action", "connection", "deploy", "boot", "test"):
        value = getattr(header.timeouts, key)
        if value is not None and value > job_seconds:
            problems.append(f"timeouts.{key}: {value:g} s exceeds the job timeout of {job_seconds:g} s")
    for name, value in list(named.items()) + list(header.timeouts.connections.items()):
        if value > job_seconds:
            problems.append(f"timeouts.actions.{name}: {value:g} s exceeds the job timeout of {job_seconds:g} s")
    blocks = job.flat_actions()
    for block in blocks:
        params = block.settings
        if params is None:
            continue
        if params.timeout is not None and params.timeout > job_seconds:
            problems.append(f"{block.place}.timeout: {params.timeout:g} s exceeds the job timeout of {job_seconds:g} s")
        for name, value in (params.timeouts or {}).items():
            if value > job_seconds:
                problems.append(f"{block.place}.timeouts.{name}: {value:g} s exceeds the job timeout of "
                                f"{job_seconds:g} s")
    for block in blocks:
        if block.settings is not None:
            problems.extend(block.settings.job_rules(block.place, blocks))
    _check_multinode(job, problems)


def _check_multinode(job: Job, problems: list[str]) -> None:
    multinode = job.multinode
    blocks = [(b, b.settings) for b in job.flat_actions() if b.settings is not None]
    if multinode is None:
        for block, params in blocks:
            if params.role:
                problems.append(f"{block.place}.role: role is only used in a multinode job "
                                "(protocols: lava-multinode: roles)")
            if params.protocols and params.protocols.lava_multinode:
                problems.append(f"{block.place}.protocols: lava-multinode calls need protocols.lava-multinode "
                                "at the top of the job")
        return
    roles = set(multinode.roles)
    starters: dict[str, set[str]] = {}  # role that is delayed -> roles expected to start it
    if multinode.subjob:
        if multinode.role not in roles:
            problems.append(f"protocols.lava-multinode.role: {multinode.role!r} is not one of the roles "
                            f"({', '.join(sorted(roles))})")
        if multinode.expect_role is not None and multinode.expect_role == multinode.role:
            problems.append("protocols.lava-multinode.expect_role: expect_role must not be the role "
                            "declaring lava-start")
    for block, params in blocks:
        place = block.place
        if not params.role:
            problems.append(f"{place}.role: every action of a multinode job names its role(s) "
                            f"(one or more of {', '.join(sorted(roles))})")
        for role in params.role or []:
            if role not in roles:
                problems.append(f"{place}.role: {role!r} is not a role of this job ({', '.join(sorted(roles))})")
        calls = params.calls
        for index, call in enumerate(calls):
            where = f"{place}.protocols.lava-multinode" + (f"[{index}]" if len(calls) > 1 else "")
            if not call.call:
                problems.append(f"{where}: request (or api) is required: one of {', '.join(MULTINODE_REQUESTS)}")
                continue
            if call.call == "lava-start":
                if not params.role:
                    problems.append(f"{where}: lava-start on an action without a role is an error")
                if call.expect_role:
                    if call.expect_role not in roles:
                        problems.append(f"{where}.expect_role: {call.expect_role!r} is not a role of this job")
                    for role in params.role or []:
                        if role == call.expect_role:
                            problems.append(f"{where}: role and expect_role are both {role!r}: a role cannot "
                                            "wait for its own lava-start")
                        starters.setdefault(role, set()).add(call.expect_role)
                for role in call.roles or []:
                    if role not in roles:
                        problems.append(f"{where}.roles: {role!r} is not a role of this job")
                if not call.expect_role and not call.roles:
                    problems.append(f"{where}: lava-start needs expect_role (on the delayed role) or roles "
                                    "(on the role that starts them)")
            elif not call.message_id:
                problems.append(f"{where}: {call.call} needs messageID (or id)")
            elif not SAFE_NAME.match(call.message_id):
                problems.append(f"{where}.messageID: {call.message_id!r} must be letters, digits, '.', '_', '-'")
    if starters and set(starters) >= roles:
        problems.append("protocols.lava-multinode: lava-start is specified on every role: no role could start")


# ---------------------------------------------------------------- schema


class _RepeatSchema(Strict):
    count: int = Field(ge=1, le=1000)
    actions: list[dict[str, Any]] = Field(min_length=1)


def job_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The job format as JSON Schema, for editors: each kind of block is the union of its methods' models."""
    registry = registry or load_builtin()
    typed: dict[str, Any] = {}
    as_written: dict[str, Any] = {}
    for kind in KINDS:
        models = registry.models_of(kind)
        if not models:
            continue
        if all(issubclass(model, ActionBase) for model in models):
            typed[kind] = functools.reduce(operator.or_, models) | None
        else:  # taken as written (submit): any mapping
            as_written[kind] = dict[str, Any] | None
    annotations = {**typed, "repeat": _RepeatSchema | None, **as_written}
    item = type("_ActionItemSchema", (Strict,), {"__annotations__": annotations, "__module__": __name__,
                                                 **dict.fromkeys(annotations)})
    job: type[JobHeader] = type("_JobSchema", (JobHeader,), {
        "__module__": __name__,
        "__annotations__": {"actions": types.GenericAlias(list, (item,)), "definitions_format": TestDefinition | None},
        "actions": Field(min_length=1),
        "definitions_format": Field(None, description="the format of test definitions"),
    })
    schema = job.model_json_schema()
    schema["title"] = "lava-dispatch job"
    schema["properties"].pop("definitions_format")
    defs = schema["$defs"]["_ActionItemSchema"]
    defs["minProperties"] = defs["maxProperties"] = 1
    return schema
