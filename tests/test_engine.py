"""The executor's semantics, proven with actions driven by the tests (no board)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from conftest import DEVICES, SAMPLES

from pipeline.action import Action, Pipeline, RetryAction, run_action
from pipeline.builder import build_pipeline
from pipeline.context import JobContext
from pipeline.device import load_device
from pipeline.errors import ActionTimeout, Canceled, InfrastructureError, JobError, JobTimeout, TestError
from pipeline.log import JobLogger
from pipeline.parser import parse_job
from pipeline.processes import ProcessRegistry
from pipeline.timeouts import TimeoutSources, parse_duration

KVM = load_device(DEVICES / "kvm01.yaml")


def make_ctx(tmp_path: Path, cancel=lambda: False) -> tuple[JobContext, list[dict]]:
    records: list[dict] = []
    job = parse_job((SAMPLES / "kvm.yaml").read_text())
    ctx = JobContext(job=job, device=KVM, logger=JobLogger([records.append]), workdir=tmp_path,
                     output_dir=tmp_path / "out", processes=ProcessRegistry(), cancel_requested=cancel)
    return ctx, records


class Flaky(Action):
    name = "flaky"

    def __init__(self, failures: int, error: type[Exception] = InfrastructureError):
        super().__init__()
        self.failures, self.error, self.calls, self.cleanups = failures, error, 0, 0

    def run(self, ctx):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")

    def cleanup(self, ctx):
        self.cleanups += 1


class Params:
    def __init__(self, failure_retry=None):
        self.failure_retry = failure_retry


def retry_with(inner: Action, failure_retry: int) -> RetryAction:
    retry = RetryAction(Params(failure_retry))
    retry.name = "retry"
    retry.internal(inner)
    return retry


def messages(records):
    return [r["msg"] for r in records if isinstance(r["msg"], str)]


# ---------------------------------------------------------------- retry


def test_retry_repeats_until_success_and_cleans_up_between_attempts(tmp_path):
    ctx, records = make_ctx(tmp_path)
    flaky = Flaky(failures=2)
    run_action(retry_with(flaky, 3), ctx)
    assert flaky.calls == 3
    assert flaky.cleanups == 2
    assert ctx.retries == {"retry": 2}
    assert "retry: attempt 3 of 3" in messages(records)


def test_retry_gives_up_after_failure_retry_attempts(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    flaky = Flaky(failures=5, error=JobError)
    with pytest.raises(JobError, match="failure 3"):
        run_action(retry_with(flaky, 3), ctx)
    assert flaky.calls == 3


def test_retry_does_not_retry_test_errors_or_cancel(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    for error in (TestError, Canceled):
        flaky = Flaky(failures=5, error=error)
        with pytest.raises(error):
            run_action(retry_with(flaky, 3), ctx)
        assert flaky.calls == 1


# ---------------------------------------------------------------- timeouts


class Sleeper(Action):
    name = "git-repo-action"

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.finished = False

    def run(self, ctx):
        time.sleep(self.seconds)  # plain Python: only the timer can interrupt it
        self.finished = True


def test_action_timeout_interrupts_a_running_action_and_logs_the_seed_wording(tmp_path):
    ctx, records = make_ctx(tmp_path)
    sleeper = Sleeper(30)
    sleeper.timeout = 0.3
    started = time.monotonic()
    with pytest.raises(ActionTimeout):
        run_action(sleeper, ctx)
    assert time.monotonic() - started < 5
    assert not sleeper.finished
    assert "git-repo-action: timeout. 0.3 seconds" in messages(records)
    assert sleeper.result == "fail" and sleeper.duration is not None


def test_timeout_inside_retry_is_retried(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    sleeper = Sleeper(30)
    sleeper.timeout = 0.2
    retry = retry_with(sleeper, 2)
    retry.timeout = 60
    with pytest.raises(ActionTimeout):
        run_action(retry, ctx)
    assert ctx.retries == {"retry": 1}


def test_job_timeout_ends_the_job_and_is_not_retried(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    sleeper = Sleeper(30)
    sleeper.timeout = 60
    retry = retry_with(sleeper, 3)
    retry.timeout = 60
    with ctx.job_timer(0.3):
        with pytest.raises(JobTimeout):
            run_action(retry, ctx)
    assert ctx.retries == {}


def test_cancel_flag_stops_before_the_next_action(tmp_path):
    flag = {"cancel": False}
    ctx, _ = make_ctx(tmp_path, cancel=lambda: flag["cancel"])
    flag["cancel"] = True
    with pytest.raises(Canceled):
        run_action(Flaky(0), ctx)


def test_durations_are_recorded_per_action(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    outer = Action()
    outer.name = "outer"
    outer.internal(Flaky(0), Flaky(0))
    top = Pipeline()
    top.add(outer)
    run_action(outer, ctx)
    assert [d["level"] for d in ctx.durations] == ["1.1", "1.2", "1"]
    assert all(d["result"] == "pass" and d["duration"] >= 0 for d in ctx.durations)


def test_levels_are_assigned_by_position():
    top = Pipeline()
    first = Action()
    first.internal(Action(), Action())
    second = Action()
    second.internal(Action())
    top.add(first)
    top.add(second)
    assert [a.level for a in top.walk()] == ["1", "1.1", "1.2", "2", "2.1"]


# ---------------------------------------------------------------- timeout rules


@pytest.mark.parametrize("value,seconds", [
    ({"minutes": 2}, 120), ({"seconds": 45}, 45), ({"hours": 1, "minutes": 1}, 3660), ({"days": 1}, 86400),
    ("2m", 120), ("90s", 90), ("1h30m", 5400), ("1d", 86400),
])
def test_durations_parse(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "2x", "m2", {"weeks": 1}, {"minutes": -1}, {}, True, None, "1.5m"])
def test_bad_durations_are_rejected(value):
    with pytest.raises(ValueError):
        parse_duration(value)


NAMES = ("lava-test-shell",)


@pytest.mark.parametrize("sources,expected", [
    (TimeoutSources(), (30, "default")),
    (TimeoutSources(device_action=40), (40, "device timeouts.action")),
    (TimeoutSources(device_action=40, job_action=50), (50, "job timeouts.action")),
    (TimeoutSources(job_action=50, device_named={"lava-test-shell": 60}), (60, "device timeouts.actions")),
    (TimeoutSources(device_named={"lava-test-shell": 60}, job_named={"lava-test-shell": 70}),
     (70, "job timeouts.actions")),
    # Since LAVA 2025.06 the job's named timeout beats the block's timeout (2023.01: the other way round).
    (TimeoutSources(job_named={"lava-test-shell": 70}, block=80), (70, "job timeouts.actions")),
    (TimeoutSources(device_named={"lava-test-shell": 60}, block=80), (80, "block timeout")),
    (TimeoutSources(block=80, block_named={"lava-test-shell": 90}), (90, "block timeouts")),
    (TimeoutSources(job_named={"lava-test-shell": 70}, block_named={"lava-test-shell": 90}), (90, "block timeouts")),
    (TimeoutSources(job_named={"other": 70}, block_named={"other": 90}), (30, "default")),
])
def test_timeout_precedence(sources, expected):
    assert sources.effective(NAMES) == expected


@pytest.mark.parametrize("sources,share,expected", [
    # Since LAVA 2025.02 a retry's attempts share its timeout: the share beats the block's timeout...
    (TimeoutSources(block=80), 40.0, (40, "share of the retry's timeout")),
    # ... but not a named timeout, the job's or the block's.
    (TimeoutSources(block=80, job_named={"lava-test-shell": 70}), 40.0, (70, "job timeouts.actions")),
    (TimeoutSources(block_named={"lava-test-shell": 90}), 40.0, (90, "block timeouts")),
])
def test_a_retry_shares_its_timeout_among_its_attempts(sources, share, expected):
    assert sources.effective(NAMES, retry_share=share) == expected


def description(job_text: str, device=KVM):
    return build_pipeline(parse_job(job_text), device).pipeline.describe()


JOB = """
job_name: t
device_type: kvm
timeouts:
  job: {minutes: 30}
  action: {minutes: 2}
  connection: {seconds: 20}
  actions:
    expect-shell-connection: {minutes: 4}
actions:
  - deploy:
      to: tmpfs
      image: http://e.com/disk.img
      os: debian
  - boot:
      method: qemu
      timeout: {minutes: 5}
      timeouts:
        export-device-env: {seconds: 7}
  - test:
      definitions:
        - {from: inline, path: a.yaml, name: a, repository: {metadata: {name: a}, run: {steps: [true]}}}
"""


def test_validate_output_shows_the_effective_timeouts():
    by_name = {entry["name"]: entry for entry in description(JOB)}
    assert by_name["deployimages"]["timeout"] == 120  # job timeouts.action
    assert by_name["execute-qemu"]["timeout"] == 300  # the block's timeout beats the device's named 30 s
    assert by_name["expect-shell-connection"]["timeout"] == 240  # job named beats the block's timeout (LAVA 2025.06)
    assert by_name["export-device-env"]["timeout"] == 7  # the block's own named timeout wins
    assert by_name["export-device-env"]["connection_timeout"] == 20
    assert "connection_timeout" not in by_name["deployimages"]


def test_repeat_on_boot_gives_three_boots():
    text = (SAMPLES / "kvm-repeat-boot.yaml").read_text()
    top = [entry["name"] for entry in description(text) if "." not in entry["level"]]
    assert top == ["deployimages", "boot-image-retry", "boot-image-retry", "boot-image-retry", "lava-test-retry"]


def test_repeat_block_gives_count_copies_of_boot_and_test():
    text = (SAMPLES / "kvm-repeat-block.yaml").read_text()
    top = [entry["name"] for entry in description(text) if "." not in entry["level"]]
    assert top == ["deployimages"] + ["boot-image-retry", "lava-test-retry"] * 6
    stages = [e["summary"] for e in description(text) if e["name"] == "lava-test-shell"]
    assert stages == [f"stage {n}: smoke-tests" for n in range(6)]


def test_seed_action_names_are_used():
    names = {entry["name"] for entry in description((SAMPLES / "kvm.yaml").read_text())}
    assert {"lava-test-shell", "expect-shell-connection", "git-repo-action", "execute-qemu",
            "http-download", "lava-overlay"} <= names
    bbb = load_device(DEVICES / "bbb01.yaml")
    names = {entry["name"] for entry in description((SAMPLES / "uboot-nfs.yaml").read_text(), bbb)}
    assert {"extract-nfsrootfs", "bootloader-commands", "bootloader-interrupt", "uboot-commands"} <= names


def test_no_strategy_reports_every_reason():
    text = JOB.replace("method: qemu", "method: u-boot\n      commands: nfs\n      type: bootz")
    from pipeline.errors import ProblemList

    with pytest.raises(ProblemList) as info:
        description(text)
    assert "UBootBoot: device type 'kvm' offers boot methods qemu, not 'u-boot'" in str(info.value)


def test_submit_is_accepted_and_logged_as_ignored(tmp_path):
    from pipeline.runner import JobRunner

    job = parse_job(JOB.replace("actions:\n  - deploy", "actions:\n  - submit: {stream: /anonymous/x/}\n  - deploy"))
    records = []
    runner = JobRunner(job, KVM, output_dir=tmp_path / "out", sinks=[records.append])
    runner.start()
    assert runner.actions[0].name == "submit-results"
    assert runner.run_action(0)
    assert any("submit is accepted but ignored" in m for m in messages(records))
    runner.ctx.logger.close()


def test_output_log_lines_are_lava_yaml(tmp_path):
    from pipeline.log import FileSink, JobLogger

    sink = FileSink(tmp_path / "output.yaml")
    logger = JobLogger([sink])
    logger.info("hello")
    logger.target("board: 'quoted' line")
    logger.close()
    records = yaml.safe_load((tmp_path / "output.yaml").read_text())
    assert [r["lvl"] for r in records] == ["info", "target"]
    assert set(records[0]) == {"dt", "lvl", "msg"}


def test_file_server_serves_only_published_files(tmp_path):
    import urllib.error
    import urllib.request

    from pipeline.fileserver import FileServer

    (tmp_path / "image.img").write_bytes(b"image bytes")
    (tmp_path / "secret").write_text("not published")
    server = FileServer()
    try:
        url = server.publish(tmp_path / "image.img", "127.0.0.1")
        assert urllib.request.urlopen(url, timeout=5).read() == b"image bytes"
        for path in ("/", "/secret", "/../secret", "/not-a-token/image.img"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
            assert info.value.code == 404
    finally:
        server.close()
