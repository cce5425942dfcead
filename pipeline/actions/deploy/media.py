"""``deploy: {to: usb}`` and ``{to: sata}``: an unchanged image written to secondary media.

The booted primary system fetches the image from the dispatcher's file
server and writes it to the device's ``device_node``; the boot after it
loads the kernel, dtb and ramdisk from inside the image (``MediaFiles``).
"""

from __future__ import annotations

import shlex
from typing import Literal

from pipeline.action import Action
from pipeline.actions.common.deploy import DeployAction, DeployBase
from pipeline.actions.common.download import DownloadRetry
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.deployment import Deployment, MediaFiles
from pipeline.device import Device
from pipeline.errors import InfrastructureError, JobError
from pipeline.fields import Compression, Field, ImageSpec, Os, Url
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("deploy", "usb", "sata")
class DeployMedia(DeployBase):
    """usb and sata: an unchanged image written to secondary media."""

    to: Literal["usb", "sata"]
    image: Url
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    kernel: str
    ramdisk: str | None = None
    dtb: str
    UUID: str = Field(pattern=r"^[0-9A-Fa-f-]{4,64}$")
    boot_part: int = Field(ge=1, le=128)
    os: Os | None = None
    device: str | None = None

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        return {"image": ("image", ImageSpec(url=self.image, compression=self.compression, md5sum=self.md5sum,
                                             sha256sum=self.sha256sum))}

    def deployment(self, place: str) -> Deployment:
        declared = super().deployment(place)
        declared.media = MediaFiles(self.kernel, self.dtb, self.ramdisk, self.UUID, self.boot_part)
        return declared


@known_action
class WriteImageToMedia(Action):
    """Write the image to the secondary media from the running primary boot."""

    name = "write-image-to-media"
    description = "write the image to secondary media through the booted system"
    uses_connection = True

    def __init__(self, params: DeployMedia, device_node: str):
        super().__init__(params)
        self.device_node = device_node
        self.summary = f"write image to {params.to} media {device_node}"

    def run(self, ctx: JobContext) -> None:
        if ctx.connection is None:
            raise JobError(f"deploy to {self.params.to} needs a booted primary system: boot before this deploy")
        image = ctx.deployed().images["image"]
        url = ctx.serve_file(image)
        node = shlex.quote(self.device_node)
        ctx.logger.info(f"writing {image.name} to {self.device_node} from {url}")
        # wget's own exit status tells a failed transfer (a pipe into dd would hide it).
        status, output = ctx.connection.run(
            f"wget -q -O {node} {url} && sync && (blockdev --rereadpt {node} 2>/dev/null || true)",
            self.timeout, self.name)
        if status != 0:
            raise InfrastructureError(f"writing the image to {self.device_node} failed (exit {status}): "
                                      f"{output.strip()[-200:]}")


@known_action
class StorageDeploy(DeployAction):
    name = "storage-deploy"
    description = "deploy an unchanged image to secondary media"

    def __init__(self, params: DeployMedia, place: str):
        super().__init__(params, place)
        self.summary = f"deploy to {params.to}: kernel {params.kernel}, dtb {params.dtb}, partition {params.boot_part}"


@strategy("deploy", priority=10)
class MediaDeploy(Strategy):
    model, other_model = DeployMedia, "'to' is not usb or sata"

    @classmethod
    def device_accepts(cls, device: Device, params: DeployMedia) -> tuple[bool, str]:
        ok, reason = device.offers("deploy", params.to)
        if not ok:
            return ok, reason
        if not device.deploy_parameters(params.to).get("device_node"):
            return False, f"the device's {params.to} method has no parameters.device_node"
        return True, ""

    @classmethod
    def make(cls, params: DeployMedia, block: ActionBlock, plan: BuildPlan) -> Action:
        node = plan.device.deploy_parameters(params.to)["device_node"]
        top = StorageDeploy(params, block.place)
        top.internal(*[DownloadRetry(key, spec) for key, (_, spec) in params.files().items()],
                     WriteImageToMedia(params, str(node)))
        return top
