"""From a booting board to a shell the tests can use: what every boot method ends with.

The keys every boot block accepts (``prompts``, ``auto_login``, ``media``)
are here with the steps that use them: log in if asked, wait for a shell
prompt (and prove the shell answers), export the job's environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Annotated

from pipeline.action import Action
from pipeline.actions.common.boot_keys import LavaBootKeys
from pipeline.connection import ShellConnection
from pipeline.context import JobContext
from pipeline.device import Device
from pipeline.errors import ConfigurationError, InfrastructureError, JobError
from pipeline.fields import Regex, Strict, as_list, or_string
from pipeline.jobscope import TOKEN_VARIABLE
from pipeline.registry import known_action
from pipeline.schema import BeforeValidator

KERNEL_FAILURES = [
    (r"Kernel panic - not syncing", "kernel panic"),
    (r"end Kernel panic", "kernel panic"),
]


class AutoLogin(Strict):
    login_prompt: Regex
    username: str
    password_prompt: Regex | None = None
    password: str | None = None
    login_commands: list[str] = []


class BootBase(LavaBootKeys):
    prompts: Annotated[list[Regex], BeforeValidator(as_list, or_string)] | None = None
    auto_login: AutoLogin | None = None
    media: str | None = None


def kernel_failures() -> list[tuple[str, Exception]]:
    """What a booting kernel prints when it fails, and the error each means."""
    return [(pattern, JobError(f"the board failed to boot: {what}")) for pattern, what in KERNEL_FAILURES]


def prompts_of(params: BootBase, device: Device) -> list[str]:
    prompts = list(params.prompts or []) or device.shell_prompts()
    if not prompts:
        raise ConfigurationError("no shell prompt: give prompts in the boot action or "
                                 "constants.shell-prompts in the device")
    return prompts


def wait_for_prompt(action: Action, ctx: JobContext, patterns: str | list[str], what: str,
                    failures: Sequence[tuple[str, Exception]] = ()) -> ShellConnection:
    """Wait, within the action's timeout, for ``patterns`` on the console (LAVA's "Wait for prompt" line first)."""
    connection = ctx.require_connection()
    ctx.logger.info(f"{action.name}: Wait for prompt. {action.timeout:g} seconds")
    connection.expect(patterns, action.timeout, what, failures)
    return connection


@known_action
class LoginAction(Action):
    name = "login-action"
    description = "log in on the console when the board asks (nothing to do without auto_login)"
    summary = "login"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        login = self.params.auto_login
        if login is None:  # the shell prompt is waited for by expect-shell-connection
            return
        connection = wait_for_prompt(self, ctx, login.login_prompt, f"{self.name} (login prompt)", kernel_failures())
        connection.sendline(login.username)
        if login.password_prompt:
            connection.expect(login.password_prompt, self.operation_timeout, f"{self.name} (password prompt)")
            connection.sendline(login.password or "", log=False)
            ctx.logger.log("input", "(password)")


@known_action
class AutoLoginAction(Action):
    name = "auto-login-action"
    description = "log in on the console if the boot asks for it (auto_login)"
    summary = "automatic login"

    def __init__(self) -> None:
        super().__init__()
        self.internal(LoginAction())


@known_action
class ExpectShellSession(Action):
    name = "expect-shell-connection"
    description = "wait for a shell prompt on the board"
    summary = "shell prompt"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        failures = kernel_failures() + [(re.escape(str(text)), InfrastructureError(f"the board reported: {text}"))
                                        for text in ctx.device.constants.get("failure-messages") or []]
        connection = wait_for_prompt(self, ctx, prompts_of(self.params, ctx.device), self.name, failures)
        # Kernel messages can land in the middle of a prompt: prove the shell answers
        # with a marker the command's own echo cannot match.
        status, _ = connection.run("true", self.operation_timeout, f"{self.name} (shell check)")
        if status != 0:
            raise InfrastructureError("the board's shell does not answer commands")
        ctx.logger.info("shell prompt reached")
        for command in (self.params.auto_login.login_commands if self.params.auto_login else []):
            connection.run(command, self.operation_timeout, f"{self.name} (login command)")


@known_action
class ExportDeviceEnv(Action):
    name = "export-device-env"
    description = "export the job's environment in the board's shell"
    summary = "device environment"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        # The token marks what the tests start, so that a local-shell board's leftovers end with the job.
        values = {"LAVA_JOB_ID": ctx.job_id, "LAVA_BOARD": ctx.board_name, TOKEN_VARIABLE: ctx.processes.scope.token,
                  **ctx.environment}
        line = " ".join(f"{key}={shlex.quote(str(value))}" for key, value in values.items())
        ctx.require_connection().run(f"export {line}", self.operation_timeout, self.name)


def board_command(action: Action, ctx: JobContext, command: str, what: str, timeout: float | None = None) -> str:
    """Run ``command`` in the board's shell; InfrastructureError saying ``what`` failed when it exits non-zero."""
    status, output = ctx.require_connection().run(command, action.operation_timeout if timeout is None else timeout,
                                                  action.name)
    if status != 0:
        raise InfrastructureError(f"{what} failed (exit {status}): {output.strip()[-200:]}")
    return output


def shell_steps(params: BootBase, *after_prompt: Action) -> list[Action]:
    """Log in if asked, wait for the shell (then ``after_prompt``), export the job's environment."""
    steps: list[Action] = [AutoLoginAction(), ExpectShellSession()]  # LAVA's: auto-login-action always
    steps += after_prompt
    steps.append(ExportDeviceEnv())
    return steps
