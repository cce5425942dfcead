"""The ``command`` block (LAVA's ``user-command``): a command the device lists, run on the dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import DEVICES, run_job

from pipeline.builder import build_pipeline
from pipeline.device import Device
from pipeline.errors import ProblemList
from pipeline.parser import parse_job

JOB = """\
job_name: user command
device_type: local-shell
timeouts: {{job: {{minutes: 2}}}}
actions:
- command:
    name: {name}
    timeout: {{seconds: {seconds}}}
- boot: {{method: minimal}}
"""


def device(users: dict | None = None, **commands: str) -> Device:
    data = yaml.safe_load((DEVICES / "local01.yaml").read_text())
    data["commands"].update(commands)
    if users is not None:
        data["commands"]["users"] = users
    return Device.model_validate(data)


def build(name: str, dev: Device, seconds: int = 30):
    return build_pipeline(parse_job(JOB.format(name=name, seconds=seconds)), dev)


def test_the_command_block_builds_lavas_user_command_with_its_timeout() -> None:
    built = build("flash", device({"flash": {"do": "echo on", "undo": ["echo a", "echo b"]}}), seconds=45)
    first = built.pipeline.actions[0]
    assert (first.level, first.name, first.timeout) == ("1", "user-command", 45)
    assert first.commands == {"do": ["echo on"], "undo": ["echo a", "echo b"]}
    assert built.pipeline.actions[1].name == "minimal-boot"


def test_the_device_own_commands_may_be_named() -> None:
    built = build("power_on", device(power_on="echo power"))
    assert built.pipeline.actions[0].commands == {"do": ["echo power"]}


@pytest.mark.parametrize(("users", "name", "message"), [
    (None, "flash", "the device has no user commands (commands.users)"),
    ({"flash": {"do": "x"}}, "other", "unknown user command 'other' (the device's: flash)"),
    ({"flash": {"do": ""}}, "flash", "user command 'flash' is invalid"),
    ({"flash": {"do": "x", "undo": [""]}}, "flash", "user command 'flash' is invalid"),
    (None, "hard_reset", "command 'hard_reset' is not defined for this device"),
    (None, "stop_test_services", "test services are not supported"),
])
def test_a_command_the_device_does_not_give_is_refused_naming_the_place(users, name, message) -> None:
    with pytest.raises(ProblemList) as caught:
        build(name, device(users))
    (problem,) = caught.value.problems
    assert problem.startswith("actions[0].command: no strategy accepts") and message in problem, problem


def test_a_job_cannot_give_a_command_line() -> None:
    with pytest.raises(ProblemList) as caught:
        parse_job(JOB.format(name="'rm -rf /'", seconds=5))
    assert any(p.startswith("actions[0].command.name") for p in caught.value.problems), caught.value.problems


def device_file(tmp_path: Path, users: dict) -> Path:
    data = yaml.safe_load((DEVICES / "local01.yaml").read_text())
    data["commands"]["users"] = users
    path = tmp_path / "local-users.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_lava_dispatch_run_runs_do_then_undo_at_the_end(tmp_path: Path) -> None:
    done, undone = tmp_path / "done", tmp_path / "undone"
    users = {"mark": {"do": ["touch " + str(done), "echo marked"], "undo": "touch " + str(undone)}}
    run = run_job(tmp_path, JOB.format(name="mark", seconds=20), device_file(tmp_path, users))
    assert run.code == 0, run.stderr[-2000:]
    assert done.exists() and undone.exists()
    messages = [str(entry.get("msg")) for entry in run.log]
    assert "Running user command 'mark'" in messages and ">> marked" in messages, messages
    assert messages.index("Running user command 'mark'") < messages.index("Running cleanup for user command 'mark'")


def test_a_command_that_times_out_or_fails_fails_the_job(tmp_path: Path) -> None:
    undone = tmp_path / "undone"
    users = {"slow": {"do": "sleep 60", "undo": "touch " + str(undone)}, "bad": {"do": "false"}}
    run = run_job(tmp_path, JOB.format(name="slow", seconds=2), device_file(tmp_path, users), name="slow")
    assert run.code == 1
    result = run.job_result()
    assert result["error_msg"] == "user-command: timeout. 2 seconds", result  # the engine's timeout, as any action's
    assert undone.exists()  # do was started: undo runs, as LAVA does
    run = run_job(tmp_path, JOB.format(name="bad", seconds=10), device_file(tmp_path, users), name="bad")
    result = run.job_result()
    assert run.code == 1 and result["error_type"] == "Infrastructure", result
    assert "user-command failed (exit 1)" in result["error_msg"], result
