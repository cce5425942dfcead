"""``boot: {method: u-boot}``: power-cycle the board, stop u-boot, send the device's command list.

The device gives named command lists (``actions.boot.methods.u-boot.<commands>``)
with placeholders ({KERNEL}, {DTB_ADDR}, {NFSROOTFS}, ...); the job chooses
one and the boot type (bootz, bootm, booti). What is substituted comes from
the deployment (TFTP names, the NFS root, or the files inside an image on
secondary media) and the device's parameters, and is refused if it could
end one bootloader command and start another.
"""

from __future__ import annotations

import re
from typing import Literal

from pipeline.action import Action, RetryAction
from pipeline.actions.common.console import ConnectDevice, ResetDevice, can_power_cycle
from pipeline.actions.common.shell import BootBase, kernel_failures, shell_steps, wait_for_prompt
from pipeline.actions.common.transfer import OverlayUnpack
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.deployment import Deployment, MediaFiles
from pipeline.device import Device
from pipeline.errors import ConfigurationError, InfrastructureError, JobError, ProblemList
from pipeline.fields import Field, SafeName
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy

BOOT_COMMANDS = ("bootz", "bootm", "booti")
KERNEL_BOOT_COMMAND = {"zimage": "bootz", "uimage": "bootm", "image": "booti"}  # LAVA's kernel.type -> command


@block_model("boot", "u-boot")
class BootUBoot(BootBase):
    method: Literal["u-boot"]
    commands: SafeName | list[str]  # the name of one of the device's command lists, or the commands themselves
    type: Literal["bootz", "bootm", "booti"] | None = None  # default: from the deploy's kernel.type (LAVA's way)
    # LAVA's secondary media boot: the files inside the image a usb/sata deploy wrote.
    kernel: str | None = None
    ramdisk: str | None = None
    dtb: str | None = None
    root_uuid: str | None = None
    boot_part: int | None = Field(None, ge=1, le=128)
    kernel_type: Literal["zimage", "uimage", "image"] | None = None
    use_bootscript: bool | None = None
    reset: bool | None = None

    def rules(self, place: str) -> list[str]:
        if isinstance(self.commands, list) and not self.commands:
            return [f"{place}.commands: an empty list of commands"]
        return []


def boot_command(params: BootUBoot, kernel_type: str | None) -> str:
    """bootz, bootm or booti: the job's ``type``, else what the kernel's type asks for (LAVA: bootm by default)."""
    if params.type:
        return params.type
    return KERNEL_BOOT_COMMAND.get(params.kernel_type or kernel_type or "", "bootm")


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
OPTIONAL_FILES = ("DTB", "RAMDISK", "TEE", "DTBO")  # (LAVA's templates load a TEE when a job deploys one)


def uboot_failures() -> list[tuple[str, Exception]]:
    return [(re.escape(text), kind(message)) for text, kind, message in UBOOT_FAILURES] + kernel_failures()


def media_files(params: BootUBoot, deployment: Deployment | None) -> MediaFiles | None:
    """The files this boot loads from secondary media: the boot block's (LAVA's form) or the deploy's."""
    if params.kernel and params.root_uuid:
        return MediaFiles(params.kernel, params.dtb or "", params.ramdisk, params.root_uuid, params.boot_part or 1)
    return deployment.media if deployment else None


def nfs_root_value(device: Device, deployment: Deployment) -> str:
    """{NFSROOTFS}: the deployed NFS root as the board mounts it (empty without one)."""
    return device.nfs_export_path(deployment.nfs_root) if deployment.nfs_root else ""


@known_action
class BootloaderCommandOverlay(Action):
    """Substitute the deployed files and addresses into the device's command list."""

    name = "bootloader-overlay"
    description = "substitute file names and addresses into the bootloader commands"
    summary = "bootloader commands"

    def __init__(self, media: MediaFiles | None = None):
        super().__init__()
        self.media = media  # the files inside the image a usb/sata deploy wrote, which this boot loads

    def values(self, ctx: JobContext) -> dict[str, str]:
        params: BootUBoot = self.params
        deployment = ctx.deployment or Deployment("none", "")  # a board booted with what it holds
        addresses = ctx.device.parameters.get(params.type or "bootm") or {}
        values = {
            "SERVER_IP": str(ctx.device.parameters.get("tftp_server_ip", "")),
            "NFS_SERVER_IP": str(ctx.device.parameters.get("nfs_server_ip",
                                                           ctx.device.parameters.get("tftp_server_ip", ""))),
            "KERNEL_ADDR": str(addresses.get("kernel", "")),
            "RAMDISK_ADDR": str(addresses.get("ramdisk", "")),
            "DTB_ADDR": str(addresses.get("dtb", "")),
            "KERNEL": deployment.tftp_names.get("kernel", ""),
            "DTB": deployment.tftp_names.get("dtb", ""),
            "RAMDISK": deployment.tftp_names.get("ramdisk", ""),
            "NFSROOTFS": nfs_root_value(ctx.device, deployment),
        }
        if deployment.persistent_nfs:  # host:/path, checked by the deploy's model
            host, path = deployment.persistent_nfs.split(":", 1)
            values.update({"NFS_SERVER_IP": host, "NFSROOTFS": path})
        if self.media is not None:
            # Secondary media: the bootloader loads the files from the written image.
            values.update({"KERNEL": self.media.kernel, "DTB": self.media.dtb, "RAMDISK": self.media.ramdisk or "",
                           "ROOT_UUID": self.media.root_uuid, "BOOT_PART": str(self.media.boot_part),
                           # LAVA's templates' names for the same values
                           "ROOT": self.media.root_uuid if self.media.root_uuid.startswith("UUID=")
                           else f"UUID={self.media.root_uuid}",
                           "ROOT_PART": str(self.media.boot_part),
                           "NFSROOTFS": ""})
        for key, value in values.items():
            if not SAFE_VALUE.match(value):
                raise JobError(f"{key}: {value!r} cannot be put into a bootloader command (only letters, "
                               "digits and . _ / : , + = @ % ~ - are allowed: no ';', quote, space, "
                               "newline or '$')")
        ramdisk = values["RAMDISK_ADDR"] if values["RAMDISK"] else "-"
        if values["RAMDISK"] and (self.media is not None or not deployment.has_uboot_header("ramdisk")):
            # A raw ramdisk needs its size; the command list sets initrd_size after loading it (as LAVA's do).
            ramdisk += ":${initrd_size}"
        dtb = values["DTB_ADDR"] if values["DTB"] else str(ctx.device.parameters.get("default_dtb", "-"))
        values["BOOTX"] = f"{params.type} {values['KERNEL_ADDR']} {ramdisk} {dtb}"
        return values

    def run(self, ctx: JobContext) -> None:
        params: BootUBoot = self.params
        if isinstance(params.commands, list):
            template = list(params.commands)
        else:
            template = (ctx.device.boot_method("u-boot").get(params.commands) or {}).get("commands") or []
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


@known_action
class BootloaderInterrupt(Action):
    name = "bootloader-interrupt"
    description = "stop the bootloader's autoboot"
    summary = "interrupt u-boot"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        method = ctx.device.boot_parameters("u-boot")
        prompt = str(method.get("interrupt_prompt", "Hit any key to stop autoboot"))
        connection = wait_for_prompt(self, ctx, re.escape(prompt), f"{self.name} ({prompt})", uboot_failures())
        connection.send(str(method.get("interrupt_char", " ")).replace("\\n", "\n"))
        connection.expect(re.escape(str(method.get("bootloader_prompt", "=>"))), self.operation_timeout,
                          f"{self.name} (bootloader prompt)", uboot_failures())


@known_action
class UBootCommands(Action):
    name = "bootloader-commands"
    description = "send the bootloader commands, one line at a time"
    aliases = ("u-boot-commands",)  # its name before LAVA's (named timeouts keep working)
    summary = "u-boot commands"
    uses_connection = True
    per_operation_timeout = True  # the seed: the same timeout for each line sent to u-boot

    def run(self, ctx: JobContext) -> None:
        method = ctx.device.boot_parameters("u-boot")
        prompt = re.escape(str(method.get("bootloader_prompt", "=>")))
        connection = ctx.require_connection()
        commands = ctx.bootloader_commands
        for index, command in enumerate(commands):
            connection.sendline(command)
            if index < len(commands) - 1:
                connection.expect(prompt, self.operation_timeout, f"{self.name} ({command})", uboot_failures())
        message = str(method.get("boot_message", "Starting kernel"))
        connection.expect(re.escape(message), self.timeout, f"{self.name} (kernel start)", uboot_failures())
        ctx.logger.info("kernel started")


@known_action
class UBootRetry(RetryAction):
    name = "uboot-commands"
    description = "power-cycle, interrupt u-boot and boot, retrying from power-on"
    aliases = ("uboot-retry",)  # its name before LAVA's
    summary = "u-boot boot with retry"


@known_action
class UBootFromMedia(Action):
    name = "uboot-from-media"
    description = "say which files the bootloader loads from secondary media (nothing to do otherwise)"
    summary = "files on media"

    def __init__(self, media: MediaFiles | None):
        super().__init__()
        self.media = media

    def run(self, ctx: JobContext) -> None:
        if self.media is not None:
            ctx.logger.info(f"u-boot loads {self.media.kernel} (dtb {self.media.dtb or 'none'}, ramdisk "
                            f"{self.media.ramdisk or 'none'}) from partition {self.media.boot_part} of the media, "
                            f"root {self.media.root_uuid}")


@known_action
class UBootAction(Action):
    name = "uboot-action"
    description = "boot the deployed files with u-boot"
    summary = "u-boot boot"


@strategy("boot", priority=10)
class UBootBoot(Strategy):
    model, other_model, method = BootUBoot, "method is not u-boot", ("boot", "u-boot")

    @classmethod
    def device_accepts(cls, device: Device, params: BootUBoot) -> tuple[bool, str]:
        method = device.boot_method("u-boot")
        sets = sorted(key for key, value in method.items() if isinstance(value, dict) and "commands" in value)
        if isinstance(params.commands, str) and params.commands not in sets:
            return False, (f"the job asks for u-boot commands {params.commands!r} but device type "
                           f"{device.device_type!r} offers {', '.join(sets) or 'none'}")
        types = sorted(key for key in BOOT_COMMANDS if key in device.parameters)
        if params.type is not None and params.type not in types:
            return False, (f"the job asks for boot type {params.type!r} but device type "
                           f"{device.device_type!r} supports {', '.join(types) or 'none'}")
        return True, ""

    @classmethod
    def make(cls, params: BootUBoot, block: ActionBlock, plan: BuildPlan) -> Action:
        deployment = plan.deployment()
        command = boot_command(params, deployment.kernel_type if deployment else None)
        if command not in plan.device.parameters:
            supported = ", ".join(key for key in BOOT_COMMANDS if key in plan.device.parameters) or "none"
            raise ProblemList([f"{block.place}: the kernel needs {command} but device type "
                               f"{plan.device.device_type!r} supports {supported} (give boot.type or the "
                               "deploy's kernel.type)"])
        params = params.model_copy(update={"type": command})
        retry = UBootRetry()
        # Every attempt starts from power-on; the console is opened again only if it closed.
        soft = None if can_power_cycle(plan.device) else list(params.soft_reboot or ["reboot"])
        transfer = plan.tests_after() and (params.transfer_overlay is not None
                                           or (deployment is not None and deployment.overlay_transfer))
        retry.internal(ResetDevice(discard_output=True, reconnect=True, soft_reboot=soft), BootloaderInterrupt(),
                       UBootCommands(), *shell_steps(params, *([OverlayUnpack()] if transfer else [])))
        media = media_files(params, deployment)
        top = UBootAction(params)
        top.internal(UBootFromMedia(media), BootloaderCommandOverlay(media), ConnectDevice(), retry)
        return top
