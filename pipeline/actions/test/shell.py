"""The ``test`` block: lava-test-shell runs a stage of test definitions on the board.

What the board prints is test output, and test output is hostile: it may
report test cases, but it cannot end the stage, start or end a run, or
report into the ``lava`` suite. The runner's own lines carry a per-stage
nonce (see bin/lava-test-runner) and only they can do those things; names,
units and measurements are bounded before they are recorded.
"""

from __future__ import annotations

import math
import re
import secrets
import shlex
import time
from typing import Any

from pipeline.action import Action, RetryAction
from pipeline.actions.common.overlay import overlay_root
from pipeline.blocks import ActionBase, ActionBlock
from pipeline.context import JobContext, TestCaseResult
from pipeline.errors import JobError, ProblemList, TestError
from pipeline.fields import Field, SafeName
from pipeline.overlay import StageTest
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy
from pipeline.testdef import parse_definitions

# No '<' inside a signal: an unclosed fake one cannot swallow the genuine signal after it on its line.
SIGNAL_RE = re.compile(
    r"<LAVA_SIGNAL_(STARTRUN|ENDRUN|STARTTC|ENDTC|TESTCASE|TESTSET|TESTREFERENCE|TESTRAISE|TESTSUITE) ?([^<>\r\n]*)>")
MULTINODE_RE = re.compile(r"<LAVA_MULTI_NODE> <LAVA_([A-Z_]+) ?([^>\r\n]*)>")
RUNNER_RE = re.compile(r"<LAVA_TEST_RUNNER (READY|EXIT) ?([^<>\r\n]*)>")
RUNNER_READY = "<LAVA_TEST_RUNNER READY>"
RESULTS = {"pass", "fail", "skip", "unknown"}
RESERVED_SUITE = "lava"  # the dispatcher's own results: one per run, and the job's
MAX_NAME = 100  # characters of a test case, suite or set name, or units (LAVA's database limit)
MAX_REFERENCE = 1024
MAX_MEASUREMENT = 64  # characters of a measurement as printed
MAX_RAISE = 500  # characters of a lava-test-raise message kept in the job's error
MAX_WARNINGS = 20  # warnings about refused test output, per stage
MAX_STARTED = 10000  # test cases started and not yet ended whose start time is kept


@block_model("test")
class TestBlock(ActionBase):
    __test__ = False
    name: SafeName | None = None
    definitions: list[dict[str, Any]] | None = Field(None, min_length=1)
    # LAVA's other kinds of test block: refused by ``rules``, each naming itself.
    docker: Any = None
    interactive: Any = None
    monitors: Any = None
    services: Any = None

    def read_parts(self, block: ActionBlock, problems: list[str]) -> None:
        block.definitions = parse_definitions(self.definitions or [], block.place, problems)

    def rules(self, place: str) -> list[str]:
        problems = [f"{place}.{key}: {what} are not supported by this dispatcher" for key, what in UNSUPPORTED_TESTS
                    if getattr(self, key) is not None]
        if self.definitions is None and not problems:
            problems.append(f"{place}.definitions: required but missing")
        return problems


UNSUPPORTED_TESTS = (("docker", "test definitions run in a docker container"),
                     ("interactive", "interactive tests"), ("monitors", "monitor tests"),
                     ("services", "docker test services"))


class RunState:
    """What the signals of one stage have told so far."""

    def __init__(self, tests: list[StageTest]):
        self.tests = {test.name: test for test in tests}
        self.run: str | None = None  # TESTRUN_ID of the definition running now
        self.suite: str | None = None  # the name results go under (lava-test-suite-name may change it)
        self.test_set: str | None = None
        self.case_started: dict[str, float] = {}
        self.run_started = 0.0
        self.pattern: re.Pattern[str] | None = None  # the running definition's parse.pattern
        self.parsed: list[tuple[str, str, str | None, str | None]] = []  # what it matched, added at ENDRUN
        self.finished: list[str] = []
        self.token = ""  # RUNNER=<nonce>: the last field of the runner's own lines
        self.warnings = 0
        self.reported: set[str] = set()  # the test cases the running definition reported


@known_action
class TestShellAction(Action):
    __test__ = False
    name = "lava-test-shell"
    description = "run the test definitions of this stage on the board and collect results"
    uses_connection = True

    def __init__(self, stage: int, params: TestBlock):
        super().__init__(params)
        self.stage = stage
        self.expected: dict[int, list[str]] = {}  # definition index -> the test cases it must report (LAVA's)

    def run(self, ctx: JobContext) -> None:
        tests = ctx.stage_tests.get(self.stage)
        if tests is None:
            raise JobError(f"stage {self.stage}: no overlay was prepared for this test action "
                           "(a deploy before the boot prepares it)")
        connection = ctx.require_connection()
        root = overlay_root(ctx)
        state = RunState(tests)
        nonce = secrets.token_hex(16)
        state.token = f"RUNNER={nonce}"
        connection.log.secrets.append(nonce)
        connection.sendline(f"{shlex.quote(root)}/bin/lava-test-runner {shlex.quote(root)}/{self.stage}")
        # The runner asks for its nonce before it runs anything: the first request is the genuine one.
        while RUNNER_READY not in connection.readline(ctx.remaining() + 1.0, self.name):
            pass
        connection.sendline(nonce, log=False)
        ctx.logger.log("input", "(the runner's nonce)")
        # Read line by line: a signal may follow other output on its line (a prompt, say).
        while True:
            line = connection.readline(ctx.remaining() + 1.0, self.name)
            signals = SIGNAL_RE.findall(line)
            for name, text in signals:
                self.signal(ctx, state, name, text.strip())
            request = MULTINODE_RE.search(line)
            if request:
                ctx.multinode_request(request.group(1), request.group(2).strip())
            markers = RUNNER_RE.findall(line)
            if any(kind == "EXIT" and text.strip() == state.token for kind, text in markers):
                break
            for kind, _ in markers:
                self.refuse(ctx, state, f"ignored <LAVA_TEST_RUNNER {kind}>: printed by a test, not by the runner")
            if state.pattern is not None and not signals and not request and not markers:
                self.parse_line(state, line)
        if state.run is not None:
            raise TestError(f"{state.run}: the test runner ended inside a run")
        missing = [name for name in state.tests if name not in state.finished]
        if missing:
            raise TestError(f"stage {self.stage}: no results from " + ", ".join(missing))

    def refuse(self, ctx: JobContext, state: RunState, what: str) -> None:
        """Log (within a budget per stage) what was refused or changed in the test output."""
        state.warnings += 1
        if state.warnings <= MAX_WARNINGS:
            ctx.logger.warning(f"{self.name}: {what}")
        if state.warnings == MAX_WARNINGS:
            ctx.logger.warning(f"{self.name}: further refused test output of this stage is not reported")

    def bounded(self, ctx: JobContext, state: RunState, what: str, value: str, limit: int = MAX_NAME) -> str:
        if len(value) <= limit:
            return value
        self.refuse(ctx, state, f"{what} of {len(value)} characters: truncated to {limit}")
        return value[:limit]

    def signal(self, ctx: JobContext, state: RunState, name: str, text: str) -> None:
        fields = text.split()
        if name in ("STARTRUN", "ENDRUN"):
            if not fields or fields[-1] != state.token:
                self.refuse(ctx, state, f"ignored <LAVA_SIGNAL_{name}>: printed by a test, not by the runner")
                return
            fields.pop()
        if name == "STARTRUN":
            state.run = fields[0] if fields else "unknown"
            state.suite = state.run
            state.run_started = time.monotonic()
            test = state.tests.get(state.run)
            state.pattern = re.compile(test.parse_pattern) if test is not None and test.parse_pattern else None
            state.parsed = []
            state.reported = set()
            ctx.logger.info(f"{self.name}: start of test run {state.run}")
        elif name == "ENDRUN":
            run = fields[0] if fields else state.run
            self.add_parsed(ctx, state)
            self.add_missing(ctx, state, run or "")
            duration = time.monotonic() - state.run_started
            # A suite renamed to "job" must not stand for the job's own entry.
            case = state.suite if state.suite and state.suite != "job" else run or "unknown"
            ctx.add_result(TestCaseResult(RESERVED_SUITE, case, "pass", definition="lava",
                                          duration=duration, level=self.level))
            ctx.logger.info(f"{self.name}: end of test run {run} ({duration:.2f} s)")
            state.finished.append(run or "")
            state.run = state.suite = state.test_set = state.pattern = None
        elif name == "STARTTC" and fields:
            if len(state.case_started) >= MAX_STARTED:  # cases started and never ended: forget their times
                state.case_started.clear()
            state.case_started[fields[0][:MAX_NAME]] = time.monotonic()
        elif name == "ENDTC":
            pass
        elif name == "TESTCASE":
            self.testcase(ctx, state, dict(item.split("=", 1) for item in fields if "=" in item))
        elif name == "TESTSET":
            test_set = fields[1] if len(fields) > 1 and fields[0] == "START" else None
            if test_set == RESERVED_SUITE:
                self.refuse(ctx, state, f"ignored test set {RESERVED_SUITE!r}: the name is reserved")
                test_set = None
            state.test_set = self.bounded(ctx, state, "a test set name", test_set) if test_set else None
        elif name == "TESTREFERENCE" and len(fields) >= 3:
            self.add(ctx, state, fields[0], fields[1],
                     extra={"reference": self.bounded(ctx, state, "a reference", fields[2], MAX_REFERENCE)})
        elif name == "TESTSUITE" and fields:
            if fields[0] == RESERVED_SUITE:
                self.refuse(ctx, state, f"ignored suite name {RESERVED_SUITE!r}: reserved for the dispatcher's results")
            else:
                state.suite = self.bounded(ctx, state, "a suite name", fields[0])
        elif name == "TESTRAISE":
            message = text or "raised by the test"
            raise TestError(f"lava-test-raise: {message[:MAX_RAISE]}")

    def testcase(self, ctx: JobContext, state: RunState, values: dict[str, str]) -> None:
        case = values.get("TEST_CASE_ID")
        result = values.get("RESULT", "").lower()
        if not case or result not in RESULTS:
            self.refuse(ctx, state, f"ignored a malformed test case signal {str(values)[:200]}")
            return
        case = self.bounded(ctx, state, "a test case id", case)
        started = state.case_started.pop(case, None)
        self.add(ctx, state, case, result, self.measurement(ctx, state, case, values.get("MEASUREMENT")),
                 values.get("UNITS"), duration=time.monotonic() - started if started else None)

    def measurement(self, ctx: JobContext, state: RunState, case: str, text: str | None) -> float | None:
        """A finite number, or None (with a warning when the test printed something else)."""
        if text is None:
            return None
        try:
            number = float(text) if len(text) <= MAX_MEASUREMENT else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            self.refuse(ctx, state, f"{case}: measurement {text[:MAX_MEASUREMENT]!r} is not a finite number "
                                    "(recorded without it)")
            return None
        return number

    def add(self, ctx: JobContext, state: RunState, case: str, result: str, measurement: float | None = None,
            units: str | None = None, duration: float | None = None, extra: dict[str, Any] | None = None) -> None:
        suite = state.suite or "unknown"
        if suite == RESERVED_SUITE:
            self.refuse(ctx, state, f"ignored test case {case[:MAX_NAME]!r}: the {RESERVED_SUITE!r} suite is reserved")
            return
        state.reported.add(case)
        extra = dict(extra or {})
        if state.test_set:
            extra["set"] = state.test_set
        ctx.add_result(TestCaseResult(suite, self.bounded(ctx, state, "a test case id", case), result,
                                      definition=state.run or suite, measurement=measurement,
                                      units=self.bounded(ctx, state, "units", units) if units else units,
                                      level=self.level, duration=duration, extra=extra))

    def add_missing(self, ctx: JobContext, state: RunState, run: str) -> None:
        """A definition's ``expected`` test cases that its run did not report, as failed (LAVA's way)."""
        index, _, _ = run.partition("_")
        for case in self.expected.get(int(index), []) if index.isdigit() else []:
            if case not in state.reported:
                ctx.logger.warning(f"{self.name}: {run}: expected test case {case!r} was not reported")
                self.add(ctx, state, case, "fail", extra={"reason": "expected but not reported"})
        state.reported = set()

    def parse_line(self, state: RunState, line: str) -> None:
        """The definition's parse.pattern, applied to a line its run printed (the results are added at its end)."""
        match = state.pattern.search(line.rstrip("\r\n")) if state.pattern is not None else None
        if not match:
            return
        groups = match.groupdict()
        test = state.tests[state.run or ""]
        result = test.fixupdict.get(groups.get("result") or "", groups.get("result") or "").lower()
        case = re.sub(r"[^A-Za-z0-9._-]+", "_", groups.get("test_case_id") or "").strip("_")
        if case:
            state.parsed.append((case, result if result in RESULTS else "unknown", groups.get("measurement") or None,
                                 groups.get("units")))

    def add_parsed(self, ctx: JobContext, state: RunState) -> None:
        for case, result, measurement, units in state.parsed:
            self.add(ctx, state, case, result, self.measurement(ctx, state, case, measurement), units)
        state.parsed = []


@known_action
class TestShellRetry(RetryAction):
    __test__ = False
    name = "lava-test-retry"
    description = "run lava-test-shell, retrying on failure"
    summary = "test with retry"


@strategy("test", priority=10)
class TestShell(Strategy):
    __test__ = False
    model, other_model = TestBlock, "not a test block"

    @classmethod
    def make(cls, params: TestBlock, block: ActionBlock, plan: BuildPlan) -> Action:
        if not plan.before("boot"):
            raise ProblemList([f"{block.place}: a test action never boots the board: put a boot action before it"])
        shell = TestShellAction(plan.stage_of(plan.position), params)
        shell.expected = {index: list(d.expected) for index, d in enumerate(block.definitions) if d.expected}
        names = ", ".join(d.name or d.path for d in block.definitions)
        shell.summary = f"stage {shell.stage}: {names}"
        retry = TestShellRetry(params)
        retry.internal(shell)
        return retry
