"""``boot: {method: qemu}``: start QEMU on the images a tmpfs deploy downloaded.

The command line is the device's (``parameters.command`` and ``options``);
the job only adds its images, each through its ``image_arg`` or the
device's default (pipeline.actions.boot.qemu_args says what an image_arg
may hold). The overlay reaches the guest in a ramdisk, or on a raw tar
drive that the booted guest unpacks.
"""

from __future__ import annotations

import shlex
from typing import Literal

from pipeline.action import Action, RetryAction
from pipeline.actions.boot.qemu_args import check_disk, check_image_arg, substitute
from pipeline.actions.common.overlay import overlay_root
from pipeline.actions.common.shell import BootBase, board_command, shell_steps
from pipeline.blocks import ActionBlock
from pipeline.connection import ShellConnection
from pipeline.context import JobContext
from pipeline.deployment import Deployment
from pipeline.errors import ConfigurationError, JobError, ProblemList
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("boot", "qemu")
class BootQemu(BootBase):
    method: Literal["qemu"]


@known_action
class CallQemuAction(Action):
    name = "execute-qemu"
    description = "start QEMU with the device's command line and the job's images"
    summary = "boot QEMU"
    aliases = ("call-qemu-action",)
    method = "qemu"  # the device's boot method whose parameters give the command line

    def command(self, ctx: JobContext) -> list[str]:
        params = ctx.device.boot_parameters(self.method)
        if not params.get("command"):
            raise ConfigurationError(f"the {self.method} method has no parameters.command")
        argv = [str(params["command"])]
        for option in params.get("options") or []:
            argv += shlex.split(str(option))
        deployment = ctx.deployed()
        image_args = deployment.image_args  # image name -> the job's image_arg (None: the device's default)
        for key in deployment.images:
            if key not in image_args or key in self.not_arguments:
                continue
            template = image_args[key]
            if template is not None:  # the job's: validated already, checked again as it is used
                problems = check_image_arg(template, set(image_args))
                if problems:
                    raise JobError(f"image_arg of {key!r}: {problems[0]}")
            template = template or params.get("image_arg")
            if not template:
                raise JobError(f"image {key!r} has no image_arg and the device gives no default")
            try:
                args, disks = substitute(str(template), dict(deployment.images))
            except ValueError as exc:
                raise JobError(f"image_arg of {key!r}: {exc}") from None
            for disk, fmt in disks:
                check_disk(disk, fmt)
            argv += args
        if deployment.overlay_drive is not None:
            template = params.get("overlay_arg")
            if not template:
                raise ConfigurationError("the job has tests on a disk image but the qemu method has no overlay_arg")
            argv += [part.replace("{overlay}", str(deployment.overlay_drive)) for part in shlex.split(str(template))]
        return argv + self.extra_arguments(ctx, params)

    not_arguments: tuple[str, ...] = ()  # images given to QEMU otherwise than by their image_arg

    def extra_arguments(self, ctx: JobContext, params: dict[str, object]) -> list[str]:
        """What the method adds after the images (qemu-nfs: the kernel command line)."""
        return []

    def run(self, ctx: JobContext) -> None:
        argv = self.command(ctx)
        ctx.logger.info("QEMU command: " + " ".join(shlex.quote(part) for part in argv))
        ctx.connection = ShellConnection(argv, ctx, "qemu", cwd=str(ctx.workdir), hard_stop=True)

    def cleanup(self, ctx: JobContext) -> None:
        ctx.close_connection()


@known_action
class UnpackOverlayDrive(Action):
    name = "unpack-overlay-drive"
    description = "unpack the overlay from the raw tar drive on the board"
    summary = "overlay from drive"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        node = ctx.device.boot_parameters("qemu").get("overlay_device")
        if not node:
            raise ConfigurationError("the qemu method has overlay_arg but no overlay_device")
        root = overlay_root(ctx)
        board_command(self, ctx, f"mkdir -p {shlex.quote(root)} && tar -xf {shlex.quote(node)} -C {shlex.quote(root)}",
                      f"unpacking the overlay from {node}")


@known_action
class BootImageRetry(RetryAction):
    name = "boot-image-retry"
    description = "boot the image and reach its shell, starting QEMU again on failure"
    summary = "boot with retry"


@known_action
class BootQemuImage(Action):
    name = "boot-qemu-image"
    description = "start QEMU on the deployed images"
    summary = "boot QEMU image"


def checked_deployment(block: ActionBlock, plan: BuildPlan, method: str, deployed_to: str,
                       ignored: tuple[str, ...] = ()) -> Deployment:
    """The deploy this QEMU boot boots, its image arguments checked (``ignored`` images' are not used)."""
    deployment = plan.deployment()
    if deployment is None or deployment.method != deployed_to:
        raise ProblemList([f"{block.place}: boot method {method} needs a deploy to {deployed_to} before it"])
    images = set(deployment.image_args)
    problems = [f"{deployment.place}.images.{key}.image_arg: {problem}"
                for key, arg in deployment.image_args.items() if arg is not None and key not in ignored
                for problem in check_image_arg(arg, images)]
    if problems:
        raise ProblemList(problems)
    return deployment


@strategy("boot", priority=10)
class QemuBoot(Strategy):
    model, other_model, method = BootQemu, "method is not qemu", ("boot", "qemu")

    @classmethod
    def make(cls, params: BootQemu, block: ActionBlock, plan: BuildPlan) -> Action:
        deployment = checked_deployment(block, plan, "qemu", "tmpfs")
        # Without a ramdisk to carry it, the overlay comes on a drive the booted guest unpacks.
        unpack = [UnpackOverlayDrive()] if plan.tests_after() and deployment.overlay_ramdisk is None else []
        # LAVA's shape: the retry on top, QEMU started inside boot-qemu-image, then the shell.
        start = BootQemuImage()
        start.internal(CallQemuAction())
        top = BootImageRetry(params)
        top.internal(start, *shell_steps(params, *unpack))
        return top
