"""The Multinode protocol inside a job: API calls from the test shell and protocol blocks on actions.

One member of a group runs with a :class:`MultinodeSupport`. It answers the
``lava-send``/``lava-wait``/``lava-wait-all``/``lava-sync`` lines its test
shell prints on the console, makes the calls that protocol blocks put on
actions (at the start of the named action's run step, before its internal
pipeline), sends ``lava-start`` when a test action that carries it ends, and
holds a delayed member back until its role is started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.action import Action
from pipeline.blocks import ActionBlock, ProtocolCall
from pipeline.checks import SHELL_NAME
from pipeline.context import JobContext, Step
from pipeline.coordination import MultinodeClient
from pipeline.errors import JobError
from pipeline.job import Job

VALUE = re.compile(r"^[^\s'\"`\\$;&|<>]*$")


@dataclass
class BoundCall:
    call: ProtocolCall
    block: ActionBlock
    done: bool = False


class MultinodeSupport:
    def __init__(self, job: Job, role: str, client: MultinodeClient, blocks: list[ActionBlock],
                 top_actions: list[Action]):
        self.job, self.role, self.client = job, role, client
        self.protocol = job.multinode
        self.timeout = self.protocol.timeout if self.protocol else 300.0
        self.block_of = {id(action): block for action, block in zip(top_actions, blocks, strict=True)}
        self.calls: list[BoundCall] = []
        for block in {id(b): b for b in blocks}.values():
            for call in (block.settings.calls if block.settings else []):
                self.calls.append(BoundCall(call, block))
        # The roles this member's own role releases with a test definition's `lava-send lava_start`.
        self.starts_roles = sorted({other for other in (self.protocol.roles if self.protocol else {})
                                    if self.expected_starter(other) == role})

    # ------------------------------------------------------------ setup

    def install(self, ctx: JobContext) -> None:
        ctx.multinode = self.client
        ctx.multinode_handler = lambda request, arguments: self.answer(ctx, request, arguments)
        ctx.protocol_hooks.append(self.before_action)
        ctx.after_hooks.append(self.after_action)
        members = self.client.members()
        ctx.environment.update({
            "LAVA_MULTINODE_SELF": self.client.member_id,
            "LAVA_MULTINODE_ROLE": self.role,
            "LAVA_MULTINODE_GROUP": " ".join(f"{member}:{role}" for member, role in sorted(members.items())),
        })

    def expected_starter(self, role: str) -> str | None:
        """The role whose lava-start a delayed ``role`` waits for (None: starts at once)."""
        for block in self.job.flat_actions():
            if block.settings is None or role not in block.roles:
                continue
            for call in block.settings.calls:
                if call.call == "lava-start" and call.expect_role:
                    return call.expect_role
        return None

    def wait_for_start(self, ctx: JobContext) -> None:
        """At job start: a delayed role waits here until another role starts it."""
        starter = self.expected_starter(self.role)
        if starter is None:
            return
        timeout = next((b.call.timeout for b in self.calls if b.call.call == "lava-start" and b.call.expect_role
                        and b.call.timeout), self.timeout)
        ctx.logger.info(f"lava-start: the start of role {self.role!r} is delayed until role {starter!r} "
                        f"calls lava-start (timeout {timeout:g} s)")
        self.client.wait_for_start(min(timeout, ctx.remaining()), should_stop=ctx.cancel_requested)
        ctx.logger.info(f"lava-start: role {self.role!r} started")

    # ------------------------------------------------------------ protocol blocks

    def top_of(self, action: Step) -> Step:
        while action.parent is not None:
            action = action.parent
        return action

    def before_action(self, action: Step, ctx: JobContext) -> None:
        block = self.block_of.get(id(self.top_of(action)))
        if block is None:
            return
        for bound in self.calls:
            if bound.block is not block or bound.call.call == "lava-start":
                continue
            named = bound.call.action
            # Without an action name the call is made at the start of the block's top-level action.
            if (named and action.name == named) or (not named and action.parent is None):
                self.protocol_call(ctx, bound)

    def after_action(self, action: Step, ctx: JobContext) -> None:
        if action.parent is not None:
            return
        block = self.block_of.get(id(action))
        for bound in self.calls:
            if bound.block is block and bound.call.call == "lava-start" and bound.call.roles:
                ctx.logger.info(f"lava-start: starting role(s) {', '.join(bound.call.roles)}")
                self.client.start_roles(list(bound.call.roles))

    def protocol_call(self, ctx: JobContext, bound: BoundCall) -> None:
        call = bound.call
        message_id = call.message_id or ""
        timeout = min(call.timeout or self.timeout, ctx.remaining())
        ctx.logger.info(f"protocol lava-multinode: {call.call} {message_id!r} (timeout {timeout:.0f} s)")
        stop = ctx.cancel_requested
        if call.call == "lava-send":
            self.client.send(message_id, stringify(call.message or {}))
            return
        if call.call == "lava-sync":
            self.client.sync(message_id, timeout, should_stop=stop)
            return
        if call.call == "lava-wait":
            received = self.client.wait(message_id, timeout, should_stop=stop)
        else:
            received = self.client.wait_all(message_id, timeout, call.role, should_stop=stop)
        merged: dict[str, str] = {}
        for data in received.values():
            merged.update(data)
        if call.key:
            if call.key not in merged:
                raise JobError(f"lava-wait {message_id!r}: the message has no key {call.key!r} "
                               f"(received {', '.join(sorted(merged)) or 'no data'})")
            merged = {call.key: merged[call.key]}
        message = {key: merged.get(value[1:], "") if isinstance(value, str) and value.startswith("$") else value
                   for key, value in (call.message or {}).items()}
        for key, value in {**merged, **stringify(message)}.items():
            if SHELL_NAME.match(key) and VALUE.match(value):
                ctx.environment[key] = value  # the test shell sees the received data
        ctx.logger.info(f"protocol lava-multinode: {call.call} {message_id!r} received "
                        f"{ {'message': message or merged, 'messageID': message_id} }")

    # ------------------------------------------------------------ the test shell's API calls

    def answer(self, ctx: JobContext, request: str, arguments: str) -> str:
        """Answer one API line from the console; the reply is typed back to the script."""
        words = arguments.split()
        stop = ctx.cancel_requested
        timeout = min(self.timeout, ctx.remaining())
        ctx.logger.info(f"multinode: lava-{request.lower().replace('_', '-')} {arguments}")
        if not words:
            return "error missing message id"
        message_id = words[0]
        if request == "SEND":
            data = {}
            for item in words[1:]:
                key, sep, value = item.partition("=")
                if not sep:
                    return f"error {item!r} is not key=value"
                data[key] = value
            self.client.send(message_id, data)
            if message_id == "lava_start" and self.starts_roles:
                ctx.logger.info(f"lava-start: starting role(s) {', '.join(self.starts_roles)}")
                self.client.start_roles(self.starts_roles)
            return "ok"
        if request == "SYNC":
            self.client.sync(message_id, timeout, should_stop=stop)
            return "ok"
        if request == "WAIT":
            received = self.client.wait(message_id, timeout, should_stop=stop)
        elif request == "WAIT_ALL":
            role = words[1] if len(words) > 1 else None
            received = self.client.wait_all(message_id, timeout, role, should_stop=stop)
        else:
            return f"error unknown request {request}"
        items = [f"{member}:{key}={value}" for member, data in sorted(received.items())
                 for key, value in sorted(data.items())]
        return " ".join(["ok", *items])


def stringify(values: dict[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in values.items()}
