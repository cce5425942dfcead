"""Actions, pipelines and the executor.

An action has a name (LAVA's, so named timeouts keep working), a level
(``1``, ``1.2``, ``1.2.3``), a timeout, ``validate()``, ``run()`` and
``cleanup()``, and may own an internal pipeline. The executor runs actions
with their timeouts, records durations, and logs ``start:``/``end:`` lines.

Timeouts interrupt a running action in two ways that raise the same
exception: every blocking helper (commands, downloads, waits on a
connection, coordinator calls) is bounded by ``ctx.remaining()``, and in
the main thread a SIGALRM timer also interrupts plain Python code
(pipeline.deadlines).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pipeline.context import JobContext
from pipeline.errors import ActionTimeout, Bug, Canceled, InfrastructureError, JobError, JobTimeout, LavaError
from pipeline.timeouts import DEFAULT_ACTION_TIMEOUT


class Action:
    """One step of a pipeline. Subclasses set name, description, summary."""

    name = "action"
    description = ""
    summary = ""
    aliases: tuple[str, ...] = ()  # other names accepted in named timeouts
    uses_connection = False  # waits on a connection; its connection_timeout bounds each operation
    per_operation_timeout = False  # the timeout bounds each operation, not the whole action

    def __init__(self, params: Any = None):
        self.params = params  # the validated block parameters of the top-level action
        self.level = ""
        self.timeout = DEFAULT_ACTION_TIMEOUT
        self.timeout_source = "default"
        self.connection_timeout: float | None = None
        self.pipeline: Pipeline | None = None
        self.parent: Action | None = None
        self.duration: float | None = None
        self.started: float | None = None
        self.result: str | None = None
        self.errors: list[str] = []

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def operation_timeout(self) -> float:
        """The bound of each operation on a connection: its connection_timeout, set when the pipeline is built."""
        if self.connection_timeout is None:
            raise Bug(f"{self.name}: no connection timeout (the action does not use a connection)")
        return self.connection_timeout

    def internal(self, *actions: Action) -> Pipeline:
        """Give this action an internal pipeline holding ``actions``."""
        self.pipeline = Pipeline(parent=self)
        for action in actions:
            self.pipeline.add(action)
        return self.pipeline

    def validate(self, ctx: JobContext) -> None:
        """Record problems in self.errors; the internal pipeline is checked too."""
        if self.pipeline:
            self.pipeline.validate(ctx)

    def run(self, ctx: JobContext) -> None:
        if self.pipeline:
            self.pipeline.run(ctx)

    def cleanup(self, ctx: JobContext) -> None:
        """Release what run() took; called once at the end of the job, even after a failure."""

    def walk(self) -> Iterator[Action]:
        yield self
        if self.pipeline:
            for action in self.pipeline.actions:
                yield from action.walk()

    def describe(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "level": self.level,
            "name": self.name,
            "description": self.description,
            "summary": self.summary,
            "timeout": round(self.timeout, 3),
        }
        if self.connection_timeout is not None:
            entry["connection_timeout"] = round(self.connection_timeout, 3)
        if self.duration is not None:
            entry["duration"] = round(self.duration, 3)
        if self.result is not None:
            entry["result"] = self.result
        return entry


class Pipeline:
    """An ordered list of actions; the top level or the inside of an action."""

    def __init__(self, parent: Action | None = None):
        self.parent = parent
        self.actions: list[Action] = []

    def add(self, action: Action) -> Action:
        action.parent = self.parent
        prefix = f"{self.parent.level}." if self.parent else ""
        action.level = f"{prefix}{len(self.actions) + 1}"
        if self.parent is not None and self.parent.params is not None:
            # Actions built before their parent knew the block inherit its parameters.
            for each in action.walk():
                if each.params is None:
                    each.params = self.parent.params
        self.actions.append(action)
        if action.pipeline:
            action.pipeline.relevel()
        return action

    def relevel(self) -> None:
        for index, action in enumerate(self.actions, 1):
            prefix = f"{self.parent.level}." if self.parent else ""
            action.level = f"{prefix}{index}"
            if action.pipeline:
                action.pipeline.relevel()

    def walk(self) -> Iterator[Action]:
        for action in self.actions:
            yield from action.walk()

    def validate(self, ctx: JobContext) -> None:
        for action in self.actions:
            action.validate(ctx)

    def run(self, ctx: JobContext) -> None:
        for action in self.actions:
            run_action(action, ctx)

    def describe(self) -> list[dict[str, Any]]:
        return [action.describe() for action in self.walk()]


class RetryAction(Action):
    """Runs its internal pipeline again on JobError or InfrastructureError.

    ``failure_retry: N`` allows up to N attempts in all (as LAVA counts).
    The internal actions are cleaned up between attempts.
    """

    @property
    def attempts(self) -> int:
        return max(1, getattr(self.params, "failure_retry", None) or 1)

    def run(self, ctx: JobContext) -> None:
        attempts = self.attempts
        for attempt in range(1, attempts + 1):
            if attempts > 1:
                ctx.logger.info(f"{self.name}: attempt {attempt} of {attempts}")
            try:
                super().run(ctx)
                return
            except (JobError, InfrastructureError) as exc:
                if isinstance(exc, (JobTimeout, Canceled)) or attempt == attempts:
                    raise
                ctx.logger.warning(f"{self.name}: {type(exc).__name__}: {exc}; retrying "
                                   f"(attempt {attempt + 1} of {attempts})")
                ctx.count_retry(self.name)
                if self.pipeline:
                    for action in reversed(list(self.pipeline.walk())):
                        cleanup_quietly(action, ctx)


def cleanup_quietly(action: Action, ctx: JobContext) -> None:
    try:
        action.cleanup(ctx)
    except Exception as exc:  # noqa: BLE001 - cleanup must go on for the rest
        ctx.logger.error(f"{action.name}: cleanup failed: {type(exc).__name__}: {exc}")


def format_seconds(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def run_action(action: Action, ctx: JobContext) -> None:
    """Run one action with its timeout; record its duration and result."""
    ctx.check()
    ctx.logger.info(f"start: {action.level} {action.name} (timeout {format_seconds(action.timeout)})")
    action.started = time.monotonic()
    ctx.started_actions.append(action)
    deadline = None if action.per_operation_timeout else action.started + action.timeout
    try:
        with ctx.deadline(deadline, action):
            ctx.protocol_calls(action)
            action.run(ctx)
            ctx.protocol_calls_after(action)
        action.result = "pass"
    except ActionTimeout:
        action.result = "fail"
        if deadline is not None and time.monotonic() >= deadline - 0.01:
            # This action's own timeout ran out: the seed's wording.
            message = f"{action.name}: timeout. {action.timeout:g} seconds"
            ctx.logger.error(message)
            raise ActionTimeout(message) from None
        raise
    except LavaError:
        action.result = "fail"
        raise
    except Exception as exc:
        action.result = "fail"
        raise Bug(f"{action.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        action.duration = time.monotonic() - action.started
        ctx.logger.info(f"end: {action.level} {action.name} (duration {format_seconds(action.duration)})"
                        + ("" if action.result == "pass" else " [failed]"))
        ctx.record_duration(action)
