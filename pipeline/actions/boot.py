"""Boot strategies and actions: qemu, u-boot, minimal."""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

import pexpect

from pipeline.action import Action, RetryAction
from pipeline.actions.deploy import image_specs, ramdisk_with_overlay
from pipeline.actions.overlay import ApplyOverlayLocal, overlay_action, overlay_root
from pipeline.actions.qemu_args import check_disk, check_image_arg, substitute
from pipeline.connection import ShellConnection
from pipeline.device import Device
from pipeline.errors import ConfigurationError, InfrastructureError, JobError
from pipeline.job import (ActionBlock, BootBase, BootMinimal, BootQemu, BootUBoot, DeployMedia, DeployTmpfs,
                          ProblemList)
from pipeline.jobscope import TOKEN_VARIABLE
from pipeline.processes import run_command
from pipeline.strategies import BuildPlan, Strategy, known_action, strategy

if TYPE_CHECKING:
    from pipeline.context import JobContext

KERNEL_FAILURES = [
    (r"Kernel panic - not syncing", "kernel panic"),
    (r"end Kernel panic", "kernel panic"),
]


def _failures() -> list[tuple[str, Exception]]:
    return [(pattern, JobError(f"the board failed to boot: {what}")) for pattern, what in KERNEL_FAILURES]


# ---------------------------------------------------------------- shared boot steps


def prompts_of(params: BootBase, device: Device) -> list[str]:
    prompts = list(params.prompts or []) or device.shell_prompts()
    if not prompts:
        raise ConfigurationError("no shell prompt: give prompts in the boot action or "
                                 "constants.shell-prompts in the device")
    return prompts


@known_action
class AutoLoginAction(Action):
    name = "auto-login-action"
    description = "log in on the console when the board asks"
    summary = "automatic login"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        login = self.params.auto_login
        connection = ctx.require_connection()
        ctx.logger.info(f"{self.name}: Wait for prompt. {self.timeout:g} seconds")
        connection.expect(login.login_prompt, self.timeout, f"{self.name} (login prompt)", _failures())
        connection.sendline(login.username)
        if login.password_prompt:
            connection.expect(login.password_prompt, self.connection_timeout, f"{self.name} (password prompt)")
            connection.sendline(login.password or "", log=False)
            ctx.logger.log("input", "(password)")


@known_action
class ExpectShellSession(Action):
    name = "expect-shell-connection"
    description = "wait for a shell prompt on the board"
    summary = "shell prompt"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        connection = ctx.require_connection()
        prompts = prompts_of(self.params, ctx.device)
        ctx.logger.info(f"{self.name}: Wait for prompt. {self.timeout:g} seconds")
        failures = _failures() + [(re.escape(str(text)), InfrastructureError(f"the board reported: {text}"))
                                  for text in ctx.device.constants.get("failure-messages") or []]
        connection.expect(prompts, self.timeout, self.name, failures)
        # Kernel messages can land in the middle of a prompt: prove the shell answers
        # with a marker the command's own echo cannot match.
        status, _ = connection.run("true", self.connection_timeout, f"{self.name} (shell check)")
        if status != 0:
            raise InfrastructureError("the board's shell does not answer commands")
        ctx.logger.info("shell prompt reached")
        for command in (self.params.auto_login.login_commands if self.params.auto_login else []):
            connection.run(command, self.connection_timeout, f"{self.name} (login command)")


@known_action
class UnpackOverlayDrive(Action):
    name = "unpack-overlay-drive"
    description = "unpack the overlay from the raw tar drive on the board"
    summary = "overlay from drive"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        node = qemu_parameters(ctx.device).get("overlay_device")
        if not node:
            raise ConfigurationError("the qemu method has overlay_arg but no overlay_device")
        root = overlay_root(ctx)
        status, output = ctx.require_connection().run(
            f"mkdir -p {shlex.quote(root)} && tar -xf {shlex.quote(node)} -C {shlex.quote(root)}",
            self.connection_timeout, self.name)
        if status != 0:
            raise InfrastructureError(f"unpacking the overlay from {node} failed: {output.strip()[-200:]}")


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
        ctx.require_connection().run(f"export {line}", self.connection_timeout, self.name)


def shell_steps(params: BootBase, unpack_drive: bool = False) -> list[Action]:
    steps: list[Action] = []
    if params.auto_login:
        steps.append(AutoLoginAction())
    steps.append(ExpectShellSession())
    if unpack_drive:
        steps.append(UnpackOverlayDrive())
    steps.append(ExportDeviceEnv())
    return steps


# ---------------------------------------------------------------- qemu


def qemu_parameters(device: Device) -> dict[str, Any]:
    return dict((device.boot_method("qemu").get("parameters") or {}))


@known_action
class CallQemuAction(Action):
    name = "execute-qemu"
    description = "start QEMU with the device's command line and the job's images"
    summary = "boot QEMU"
    aliases = ("call-qemu-action",)

    def __init__(self, image_args: dict[str, str | None]):
        super().__init__()
        self.image_args = image_args  # image name -> the job's image_arg (None: the device's default)

    def command(self, ctx: JobContext) -> list[str]:
        params = qemu_parameters(ctx.device)
        if not params.get("command"):
            raise ConfigurationError("the qemu method has no parameters.command")
        argv = [str(params["command"])]
        for option in params.get("options") or []:
            argv += shlex.split(str(option))
        for key, path in ctx.images.items():
            if key not in self.image_args:
                continue
            template = self.image_args[key]
            if template is not None:  # the job's: validated already, checked again as it is used
                problems = check_image_arg(template, set(self.image_args))
                if problems:
                    raise JobError(f"image_arg of {key!r}: {problems[0]}")
            template = template or params.get("image_arg")
            if not template:
                raise JobError(f"image {key!r} has no image_arg and the device gives no default")
            try:
                args, disks = substitute(str(template), dict(ctx.images))
            except ValueError as exc:
                raise JobError(f"image_arg of {key!r}: {exc}") from None
            for disk, fmt in disks:
                check_disk(disk, fmt)
            argv += args
        if ctx.overlay_drive is not None:
            template = params.get("overlay_arg")
            if not template:
                raise ConfigurationError("the job has tests on a disk image but the qemu method has no overlay_arg")
            argv += [part.replace("{overlay}", str(ctx.overlay_drive)) for part in shlex.split(str(template))]
        return argv

    def run(self, ctx: JobContext) -> None:
        argv = self.command(ctx)
        ctx.logger.info("QEMU command: " + " ".join(shlex.quote(part) for part in argv))
        ctx.connection = ShellConnection(argv, ctx, "qemu", cwd=str(ctx.workdir), hard_stop=True)

    def cleanup(self, ctx: JobContext) -> None:
        ctx.close_connection()


@known_action
class BootImageRetry(RetryAction):
    name = "boot-image-retry"
    description = "boot the image, retrying from power-on on failure"
    summary = "boot with retry"


@known_action
class BootQemuImage(Action):
    name = "boot-qemu-image"
    description = "boot the deployed images with QEMU"
    summary = "boot QEMU image"


def last_deploy(plan: BuildPlan) -> ActionBlock | None:
    for block in reversed(plan.order[: plan.position]):
        if block.kind == "deploy":
            return block
    return None


@strategy("boot", priority=10)
class QemuBoot(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, BootQemu):
            return False, "method is not qemu"
        if "qemu" not in device.boot_methods:
            return False, f"device type {device.device_type!r} has no qemu boot method"
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        deploy = last_deploy(plan)
        if deploy is None or not isinstance(deploy.params, DeployTmpfs):
            raise ProblemList([f"{block.place}: boot method qemu needs a deploy to tmpfs before it"])
        specs = image_specs(deploy.params)
        image_args = {key: spec.image_arg for key, spec in specs.items()}
        problems = [f"{deploy.place}.images.{key}.image_arg: {problem}" for key, arg in image_args.items()
                    if arg is not None for problem in check_image_arg(arg, set(specs))]
        if problems:
            raise ProblemList(problems)
        has_tests = any(b.kind == "test" for b in plan.order[plan.position + 1:])
        unpack = has_tests and ramdisk_with_overlay(specs) is None
        retry = BootImageRetry()
        retry.internal(CallQemuAction(image_args), *shell_steps(block.params, unpack))
        top = BootQemuImage(block.params)
        top.internal(retry)
        return top


# ---------------------------------------------------------------- connect / power (bootloader and minimal boards)


def device_commands(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def run_power(ctx: JobContext, which: str, timeout: float) -> bool:
    """Run the device's power command ``which``; False if the device has none."""
    commands = device_commands(getattr(ctx.device.commands, which))
    for command in commands:
        command = ctx.device_command(command)
        ctx.logger.info(f"{which}: {command}")
        run_command(["/bin/sh", "-c", command], timeout, which, registry=ctx.processes)
    return bool(commands)


@known_action
class ConnectDevice(Action):
    name = "connect-device"
    description = "open the board's console with the device's connect command"
    summary = "console"

    def run(self, ctx: JobContext) -> None:
        if ctx.connection is not None and ctx.connection.alive():
            ctx.logger.info("console already connected")
            return
        ctx.close_connection()  # a console that closed (a retry connects again)
        command = ctx.device.commands.connect
        if not command:
            raise ConfigurationError("the device has no commands.connect")
        ctx.board_root().mkdir(parents=True, exist_ok=True)
        command = ctx.device_command(command)
        ctx.logger.info(f"connect: {command}")
        ctx.connection = ShellConnection(["/bin/sh", "-c", command], ctx, "console", cwd=str(ctx.board_root()))


@known_action
class ResetDevice(Action):
    name = "reset-device"
    description = "power-cycle the board (hard_reset, or power_off then power_on)"
    summary = "reset the board"

    def __init__(self, discard_output: bool = False):
        super().__init__()
        self.discard_output = discard_output  # a stale bootloader prompt must not match after the reset

    def run(self, ctx: JobContext) -> None:
        if self.discard_output:
            discard_pending_output(ctx)
        if run_power(ctx, "hard_reset", ctx.remaining()):
            return
        run_power(ctx, "power_off", ctx.remaining())
        if not run_power(ctx, "power_on", ctx.remaining()):
            raise ConfigurationError("the device has neither hard_reset nor power_on commands")


@known_action
class MinimalBootAction(Action):
    name = "minimal-boot"
    description = "connect to the board without a power cycle (unless reset is asked)"
    summary = "minimal boot"


@strategy("boot", priority=5)
class MinimalBoot(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, BootMinimal):
            return False, "method is not minimal"
        if "minimal" not in device.boot_methods:
            return False, f"device type {device.device_type!r} has no minimal boot method"
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        params: BootMinimal = block.params
        steps: list[Action] = []
        local = (plan.device.boot_method("minimal").get("parameters") or {}).get("overlay") == "local"
        first_boot = not any(b.kind == "boot" for b in plan.order[: plan.position])
        if first_boot and not plan.deployed_before():
            stages = [(plan.stage_of(i), b) for i, b in enumerate(plan.order)
                      if i > plan.position and b.kind == "test"]
            lava_overlay = overlay_action(stages, None)
            if lava_overlay is not None:
                if not local:
                    raise ProblemList([f"{block.place}: the tests need a deploy before this boot "
                                       "(this device cannot receive the overlay otherwise)"])
                steps += [lava_overlay, ApplyOverlayLocal()]
        steps.append(ConnectDevice())
        if params.reset:
            steps.append(ResetDevice())
        steps += shell_steps(params)
        top = MinimalBootAction(params)
        top.internal(*steps)
        return top


# ---------------------------------------------------------------- u-boot

UBOOT_FAILURES = [
    ("Wrong Ramdisk Image Format", JobError, "u-boot cannot use the ramdisk: wrong ramdisk image format"),
    ("Bad Linux ARM64 Image magic", JobError, "u-boot: the kernel is not an arm64 Image (booti)"),
    ("Bad Linux ARM zImage magic", JobError, "u-boot: the kernel is not a zImage (bootz)"),
    ("Bad Linux RISCV Image magic", JobError, "u-boot: the kernel is not a RISC-V Image (booti)"),
    ("Bad Data CRC", JobError, "u-boot: bad data CRC in an image"),
    ("Bad Header Checksum", JobError, "u-boot: bad header checksum in an image"),
    ("Wrong Image Format for bootm", JobError, "u-boot: the kernel is not a uImage (bootm)"),
    ("No Linux ARM Ramdisk Image", JobError, "u-boot: the ramdisk's u-boot header is not an ARM ramdisk's"),
    ("No Linux AArch64 Ramdisk Image", JobError, "u-boot: the ramdisk's u-boot header is not an arm64 ramdisk's"),
    ("Ramdisk image is corrupt or invalid", JobError, "u-boot: the ramdisk is corrupt or invalid"),
    ("ERROR: Did not find a cmdline Flattened Device Tree", JobError, "u-boot: the dtb is not valid"),
    ("ERROR: image is not a fdt", JobError, "u-boot: the dtb is not a device tree blob"),
    ("TFTP error", InfrastructureError, "u-boot: TFTP error"),
    ("Retry count exceeded", InfrastructureError, "u-boot: TFTP transfer failed (retry count exceeded)"),
    ("Unknown command", ConfigurationError, "u-boot does not know a command of the device's command list"),
]
# A substituted value is a file name, a path, an address or an IP address:
# nothing that could end one bootloader command and start another, quote,
# expand a variable or comment out the rest of the line.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._/:,+=@%~-]*$")
PLACEHOLDER = re.compile(r"\{[A-Z][A-Z0-9_]*\}")
# Lines naming a file the job does not deploy are left out (as LAVA does), so one
# command list serves jobs with and without a dtb or a ramdisk.
OPTIONAL_FILES = ("DTB", "RAMDISK")


def uboot_failures() -> list[tuple[str, Exception]]:
    return [(re.escape(text), kind(message)) for text, kind, message in UBOOT_FAILURES] + _failures()


def uboot_method(device: Device) -> dict[str, Any]:
    return device.boot_method("u-boot")


@known_action
class BootloaderCommandOverlay(Action):
    """Substitute the deployed files and addresses into the device's command list."""

    name = "bootloader-overlay"
    description = "substitute file names and addresses into the bootloader commands"
    summary = "bootloader commands"

    def __init__(self, media: DeployMedia | None = None):
        super().__init__()
        self.media = media  # the usb/sata deploy this boot uses: files inside its image

    def values(self, ctx: JobContext) -> dict[str, str]:
        params: BootUBoot = self.params
        addresses = ctx.device.parameters.get(params.type) or {}
        values = {
            "SERVER_IP": str(ctx.device.parameters.get("tftp_server_ip", "")),
            "NFS_SERVER_IP": str(ctx.device.parameters.get("nfs_server_ip",
                                                           ctx.device.parameters.get("tftp_server_ip", ""))),
            "KERNEL_ADDR": str(addresses.get("kernel", "")),
            "RAMDISK_ADDR": str(addresses.get("ramdisk", "")),
            "DTB_ADDR": str(addresses.get("dtb", "")),
            "KERNEL": ctx.tftp_names.get("kernel", ""),
            "DTB": ctx.tftp_names.get("dtb", ""),
            "RAMDISK": ctx.tftp_names.get("ramdisk", ""),
            "NFSROOTFS": ctx.nfs_export_path() if ctx.nfs_root else "",
        }
        if self.media is not None:
            # Secondary media: the bootloader loads the files from the written image.
            values.update({"KERNEL": self.media.kernel, "DTB": self.media.dtb, "RAMDISK": self.media.ramdisk or "",
                           "ROOT_UUID": self.media.UUID, "BOOT_PART": str(self.media.boot_part), "NFSROOTFS": ""})
        for key, value in values.items():
            if not SAFE_VALUE.match(value):
                raise JobError(f"{key}: {value!r} cannot be put into a bootloader command (only letters, "
                               "digits and . _ / : , + = @ % ~ - are allowed: no ';', quote, space, "
                               "newline or '$')")
        ramdisk = values["RAMDISK_ADDR"] if values["RAMDISK"] else "-"
        if values["RAMDISK"] and (self.media is not None or not ctx.uboot_ramdisk_has_header()):
            # A raw ramdisk needs its size; the command list sets initrd_size after loading it (as LAVA's do).
            ramdisk += ":${initrd_size}"
        dtb = values["DTB_ADDR"] if values["DTB"] else str(ctx.device.parameters.get("default_dtb", "-"))
        values["BOOTX"] = f"{params.type} {values['KERNEL_ADDR']} {ramdisk} {dtb}"
        return values

    def run(self, ctx: JobContext) -> None:
        params: BootUBoot = self.params
        template = (uboot_method(ctx.device).get(params.commands) or {}).get("commands") or []
        if not template:
            raise ConfigurationError(f"the device's u-boot command list {params.commands!r} is empty")
        values = self.values(ctx)
        commands = []
        for line in template:
            text = str(line)
            missing = {name[1:-1] for name in PLACEHOLDER.findall(text) if not values.get(name[1:-1])}
            if missing and missing <= set(OPTIONAL_FILES):
                ctx.logger.debug(f"bootloader command left out (the job deploys no {', '.join(sorted(missing))}): "
                                 f"{text}")
                continue
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
            unknown = PLACEHOLDER.search(text)
            if unknown:
                raise JobError(f"bootloader command {line!r}: {unknown.group()} has no value in this job "
                               "(deploy the file it names, or the device lacks a parameter)")
            commands.append(text)
        ctx.bootloader_commands = commands
        for command in commands:
            ctx.logger.debug(f"bootloader command: {command}")


def discard_pending_output(ctx: JobContext) -> None:
    """Forget what the console printed before a power cycle: a stale prompt must not match later."""
    connection = ctx.connection
    if connection is None or not connection.alive():
        return
    try:
        while True:
            connection.child.read_nonblocking(65536, timeout=0)
    except (pexpect.TIMEOUT, pexpect.EOF, OSError):
        pass
    connection.discard()


@known_action
class BootloaderInterrupt(Action):
    name = "bootloader-interrupt"
    description = "stop the bootloader's autoboot"
    summary = "interrupt u-boot"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        method = uboot_method(ctx.device).get("parameters") or {}
        connection = ctx.require_connection()
        prompt = str(method.get("interrupt_prompt", "Hit any key to stop autoboot"))
        ctx.logger.info(f"{self.name}: Wait for prompt. {self.timeout:g} seconds")
        connection.expect(re.escape(prompt), self.timeout, f"{self.name} ({prompt})", uboot_failures())
        connection.send(str(method.get("interrupt_char", " ")).replace("\\n", "\n"))
        connection.expect(re.escape(str(method.get("bootloader_prompt", "=>"))), self.connection_timeout,
                          f"{self.name} (bootloader prompt)", uboot_failures())


@known_action
class UBootCommands(Action):
    name = "u-boot-commands"
    description = "send the bootloader commands, one line at a time"
    aliases = ("bootloader-commands",)
    summary = "u-boot commands"
    uses_connection = True
    per_operation_timeout = True  # the seed: the same timeout for each line sent to u-boot

    def run(self, ctx: JobContext) -> None:
        method = uboot_method(ctx.device).get("parameters") or {}
        prompt = re.escape(str(method.get("bootloader_prompt", "=>")))
        connection = ctx.require_connection()
        commands = ctx.bootloader_commands
        for index, command in enumerate(commands):
            connection.sendline(command)
            if index < len(commands) - 1:
                connection.expect(prompt, self.connection_timeout, f"{self.name} ({command})", uboot_failures())
        message = str(method.get("boot_message", "Starting kernel"))
        connection.expect(re.escape(message), self.timeout, f"{self.name} (kernel start)", uboot_failures())
        ctx.logger.info("kernel started")


@known_action
class UBootRetry(RetryAction):
    name = "uboot-retry"
    description = "power-cycle, interrupt u-boot and boot, retrying from power-on"
    summary = "u-boot boot with retry"


@known_action
class UBootAction(Action):
    name = "uboot-action"
    description = "boot the deployed files with u-boot"
    summary = "u-boot boot"


@strategy("boot", priority=10)
class UBootBoot(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, BootUBoot):
            return False, "method is not u-boot"
        method = uboot_method(device)
        if not method:
            return False, f"device type {device.device_type!r} has no u-boot boot method"
        sets = sorted(key for key, value in method.items() if isinstance(value, dict) and "commands" in value)
        if params.commands not in sets:
            return False, (f"the job asks for u-boot commands {params.commands!r} but device type "
                           f"{device.device_type!r} offers {', '.join(sets) or 'none'}")
        types = sorted(key for key in ("bootz", "bootm", "booti") if key in device.parameters)
        if params.type not in types:
            return False, (f"the job asks for boot type {params.type!r} but device type "
                           f"{device.device_type!r} supports {', '.join(types) or 'none'}")
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        params: BootUBoot = block.params
        retry = UBootRetry()
        # Every attempt starts from power-on; the console is opened again only if it closed.
        retry.internal(ConnectDevice(), ResetDevice(discard_output=True), BootloaderInterrupt(), UBootCommands(),
                       *shell_steps(params))
        deploy = last_deploy(plan)
        media = deploy.params if deploy is not None and isinstance(deploy.params, DeployMedia) else None
        top = UBootAction(params)
        top.internal(BootloaderCommandOverlay(media), retry)
        return top
