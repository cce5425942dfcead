"""The test strategy: lava-test-shell runs a stage of test definitions on the board."""

from __future__ import annotations

import re
import shlex
import time
from typing import TYPE_CHECKING, Any

from pipeline.action import Action, RetryAction
from pipeline.actions.overlay import overlay_root
from pipeline.context import TestCaseResult
from pipeline.device import Device
from pipeline.errors import JobError, TestError
from pipeline.job import ActionBlock, ProblemList, TestBlock
from pipeline.strategies import BuildPlan, Strategy, known_action, strategy

if TYPE_CHECKING:
    from pipeline.context import JobContext
    from pipeline.overlay import StageTest

SIGNAL_RE = re.compile(
    r"<LAVA_SIGNAL_(STARTRUN|ENDRUN|STARTTC|ENDTC|TESTCASE|TESTSET|TESTREFERENCE|TESTRAISE|TESTSUITE) ?([^>\r\n]*)>")
MULTINODE_RE = re.compile(r"<LAVA_MULTI_NODE> <LAVA_([A-Z_]+) ?([^>\r\n]*)>")
RUNNER_EXIT = "<LAVA_TEST_RUNNER EXIT>"
RESULTS = {"pass", "fail", "skip", "unknown"}


class RunState:
    """What the signals of one stage have told so far."""

    def __init__(self, tests: list[StageTest]):
        self.tests = {test.name: test for test in tests}
        self.run: str | None = None  # TESTRUN_ID of the definition running now
        self.suite: str | None = None  # the name results go under (lava-test-suite-name may change it)
        self.test_set: str | None = None
        self.case_started: dict[str, float] = {}
        self.run_started = 0.0
        self.output: list[str] = []
        self.finished: list[str] = []


@known_action
class TestShellAction(Action):
    __test__ = False
    name = "lava-test-shell"
    description = "run the test definitions of this stage on the board and collect results"
    uses_connection = True

    def __init__(self, stage: int, params: TestBlock):
        super().__init__(params)
        self.stage = stage

    def run(self, ctx: JobContext) -> None:
        tests = ctx.stage_tests.get(self.stage)
        if tests is None:
            raise JobError(f"stage {self.stage}: no overlay was prepared for this test action "
                           "(a deploy before the boot prepares it)")
        connection = ctx.require_connection()
        root = overlay_root(ctx)
        state = RunState(tests)
        connection.sendline(f"{shlex.quote(root)}/bin/lava-test-runner {shlex.quote(root)}/{self.stage}")
        # Read line by line: a signal may follow other output on its line (a prompt, say).
        while True:
            line = connection.readline(ctx.remaining() + 1.0, self.name)
            signals = SIGNAL_RE.findall(line)
            for name, text in signals:
                self.signal(ctx, state, name, text.strip())
            request = MULTINODE_RE.search(line)
            if request:
                ctx.multinode_request(request.group(1), request.group(2).strip())
            if RUNNER_EXIT in line:
                break
            if state.run is not None and not signals and not request:
                state.output.append(line)
        if state.run is not None:
            raise TestError(f"{state.run}: the test runner ended inside a run")
        missing = [name for name in state.tests if name not in state.finished]
        if missing:
            raise TestError(f"stage {self.stage}: no results from " + ", ".join(missing))

    def signal(self, ctx: JobContext, state: RunState, name: str, text: str) -> None:
        fields = text.split()
        if name == "STARTRUN":
            state.run = fields[0] if fields else "unknown"
            state.suite = state.run
            state.run_started = time.monotonic()
            state.output = []
            ctx.logger.info(f"{self.name}: start of test run {state.run}")
        elif name == "ENDRUN":
            run = fields[0] if fields else state.run
            self.apply_pattern(ctx, state)
            duration = time.monotonic() - state.run_started
            ctx.add_result(TestCaseResult("lava", state.suite or run or "unknown", "pass", definition="lava",
                                          duration=duration, level=self.level))
            ctx.logger.info(f"{self.name}: end of test run {run} ({duration:.2f} s)")
            state.finished.append(run or "")
            state.run = state.suite = state.test_set = None
        elif name == "STARTTC" and fields:
            state.case_started[fields[0]] = time.monotonic()
        elif name == "ENDTC":
            pass
        elif name == "TESTCASE":
            self.testcase(ctx, state, dict(item.split("=", 1) for item in fields if "=" in item))
        elif name == "TESTSET":
            state.test_set = fields[1] if len(fields) > 1 and fields[0] == "START" else None
        elif name == "TESTREFERENCE" and len(fields) >= 3:
            self.add(ctx, state, fields[0], fields[1], extra={"reference": fields[2]})
        elif name == "TESTSUITE" and fields:
            state.suite = fields[0]
        elif name == "TESTRAISE":
            raise TestError(f"lava-test-raise: {text or 'raised by the test'}")

    def testcase(self, ctx: JobContext, state: RunState, values: dict[str, str]) -> None:
        case = values.get("TEST_CASE_ID")
        result = values.get("RESULT", "").lower()
        if not case or result not in RESULTS:
            ctx.logger.warning(f"{self.name}: ignoring a malformed test case signal {values}")
            return
        measurement = values.get("MEASUREMENT")
        try:
            number = float(measurement) if measurement is not None else None
        except ValueError:
            ctx.logger.warning(f"{self.name}: {case}: measurement {measurement!r} is not a number")
            number = None
        started = state.case_started.pop(case, None)
        self.add(ctx, state, case, result, number, values.get("UNITS"),
                 duration=time.monotonic() - started if started else None)

    def add(self, ctx: JobContext, state: RunState, case: str, result: str, measurement: float | None = None,
            units: str | None = None, duration: float | None = None, extra: dict[str, Any] | None = None) -> None:
        extra = dict(extra or {})
        if state.test_set:
            extra["set"] = state.test_set
        suite = state.suite or "unknown"
        ctx.add_result(TestCaseResult(suite, case, result, definition=state.run or suite, measurement=measurement,
                                      units=units, level=self.level, duration=duration, extra=extra))

    def apply_pattern(self, ctx: JobContext, state: RunState) -> None:
        """The definition's parse.pattern, applied to what its run printed."""
        test = state.tests.get(state.run or "")
        if test is None or not test.parse_pattern:
            return
        pattern = re.compile(test.parse_pattern)
        for line in state.output:
            match = pattern.search(line.rstrip("\r\n"))
            if not match:
                continue
            groups = match.groupdict()
            result = test.fixupdict.get(groups.get("result") or "", groups.get("result") or "").lower()
            if result not in RESULTS:
                result = "unknown"
            measurement = groups.get("measurement")
            try:
                number = float(measurement) if measurement else None
            except ValueError:
                number = None
            case = re.sub(r"[^A-Za-z0-9._-]+", "_", groups.get("test_case_id") or "").strip("_")
            if case:
                self.add(ctx, state, case, result, number, groups.get("units"))


@known_action
class TestShellRetry(RetryAction):
    __test__ = False
    name = "lava-test-retry"
    description = "run lava-test-shell, retrying on failure"
    summary = "test with retry"


@strategy("test", priority=10)
class TestShell(Strategy):
    __test__ = False

    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, TestBlock):
            return False, "not a test block"
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        if not any(b.kind == "boot" for b in plan.order[: plan.position]):
            raise ProblemList([f"{block.place}: a test action never boots the board: put a boot action before it"])
        shell = TestShellAction(plan.stage_of(plan.position), block.params)
        names = ", ".join(d.name or d.path for d in block.definitions)
        shell.summary = f"stage {shell.stage}: {names}"
        retry = TestShellRetry(block.params)
        retry.internal(shell)
        return retry
