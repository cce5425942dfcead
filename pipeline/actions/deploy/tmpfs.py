"""``deploy: {to: tmpfs}``: images downloaded for QEMU, the overlay in a ramdisk or on a drive."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from typing import Literal

from pipeline import overlay
from pipeline.action import Action
from pipeline.actions.common.deploy import DeployAction, DeployBase, DeployDeviceEnv
from pipeline.actions.common.download import DownloadRetry
from pipeline.actions.common.image_overlays import overlay_problems, overlay_steps
from pipeline.actions.common.overlay import overlay_action, overlay_root
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.device import Device
from pipeline.fields import Compression, Field, FileRef, ImageSpec, Os, SafeName, Url
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("deploy", "tmpfs")
class DeployTmpfs(DeployBase):
    to: Literal["tmpfs"]
    image: Url | None = None
    images: dict[SafeName, FileRef] | None = None
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    os: Os | None = None  # LAVA's kvm-noos jobs give none
    root_partition: int | None = Field(None, ge=0, le=128)

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        if self.image:
            return {"image": ("image", ImageSpec(url=self.image, compression=self.compression, md5sum=self.md5sum,
                                                 sha256sum=self.sha256sum, root_partition=self.root_partition))}
        return {key: (f"images.{key}.url", spec) for key, spec in (self.images or {}).items()}

    def rules(self, place: str) -> list[str]:
        if bool(self.image) == bool(self.images):
            return [f"{place}: tmpfs needs exactly one of image (a URL) or images (a mapping)"]
        return overlay_problems(place, self.files())

    def job_rules(self, place: str, blocks: Sequence[ActionBlock]) -> list[str]:
        tests = any(block.kind == "test" for block in blocks)
        if tests and self.image and not self.compression and re.search(r"\.(gz|bz2|xz)$", self.image):
            return [f"{place}.compression: the image looks compressed; with test actions "
                    "the compression must be given (gz, bz2 or xz)"]
        return []


@known_action
class AppendOverlays(Action):
    name = "append-overlays"
    description = "append the overlay to the ramdisk as a second cpio archive"

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.summary = f"overlay into {key}"

    def run(self, ctx: JobContext) -> None:
        images = ctx.deployed().images
        ramdisk = images[self.key]
        appended = ramdisk.with_name(ramdisk.name + ".lava")
        shutil.copyfile(ramdisk, appended)
        overlay.append_to_ramdisk(appended, ctx.overlay_files()[1], overlay_root(ctx))
        images[self.key] = appended
        ctx.logger.info(f"{self.key}: overlay appended ({appended.stat().st_size} bytes)")


@known_action
class ApplyOverlayGuest(Action):
    name = "apply-overlay-guest"
    description = "make the overlay a raw tar drive that the booted board unpacks"
    summary = "overlay drive"

    def run(self, ctx: JobContext) -> None:
        drive = ctx.workdir / "overlay-drive.tar"
        overlay.raw_tar_drive(ctx.overlay_files()[0], drive)
        ctx.deployed().overlay_drive = drive


@known_action
class DeployImages(DeployAction):
    name = "deployimages"
    description = "download images for QEMU and apply the overlay"

    def __init__(self, params: DeployTmpfs, plan: BuildPlan, place: str):
        super().__init__(params, place)
        files = params.files()
        self.summary = "deploy images: " + ", ".join(files)
        lava_overlay = overlay_action(plan.stages_after(), params.os)
        # LAVA's order: the overlay, the board's environment, the downloads, the overlay applied.
        steps: list[Action] = [lava_overlay] if lava_overlay else []
        steps.append(DeployDeviceEnv())
        steps += [DownloadRetry(key, spec, after=overlay_steps(key, spec)) for key, (_, spec) in files.items()]
        if lava_overlay:
            ramdisk = self.declared.overlay_ramdisk
            steps.append(AppendOverlays(ramdisk) if ramdisk else ApplyOverlayGuest())
        self.internal(*steps)


@strategy("deploy", priority=10)
class TmpfsDeploy(Strategy):
    model, other_model = DeployTmpfs, "'to' is not tmpfs"

    @classmethod
    def device_accepts(cls, device: Device, params: DeployTmpfs) -> tuple[bool, str]:
        if "image" in device.deploy_methods:  # LAVA's qemu devices name the method of tmpfs deploys ``image``
            return True, ""
        return device.offers("deploy", "tmpfs")

    @classmethod
    def make(cls, params: DeployTmpfs, block: ActionBlock, plan: BuildPlan) -> Action:
        return DeployImages(params, plan, block.place)
