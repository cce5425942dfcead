"""``deploy: {to: usb}`` and ``{to: sata}``: an unchanged image written to secondary media.

The booted primary system fetches the image from the dispatcher's file
server and writes it to the device's ``device_node``; the boot after it
loads the kernel, dtb and ramdisk from inside the image (``MediaFiles``).
"""

from __future__ import annotations

import re
import shlex
from typing import Literal

from pipeline.action import Action
from pipeline.actions.common.deploy import DeployAction, DeployBase
from pipeline.actions.common.download import DownloadRetry
from pipeline.actions.common.image_overlays import overlay_problems, overlay_steps
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.deployment import Deployment, MediaFiles
from pipeline.device import Device
from pipeline.errors import InfrastructureError, JobError
from pipeline.fields import Compression, Field, FileRef, ImageSpec, Os, SafeName, Strict
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy

_DISK_ID = re.compile(r"^[A-Za-z0-9._:+-]{1,200}$")  # a name under /dev/disk/by-id


class MediaTool(Strict):
    """LAVA's download or writer tool on the board (accepted; the board fetches the image with wget here)."""

    tool: str
    options: str
    prompt: str


class MediaPrompts(Strict):
    prompts: list[str]


@block_model("deploy", "usb", "sata")
class DeployMedia(DeployBase):
    """usb and sata: an unchanged image written to secondary media.

    Two forms: LAVA's (``image: {url, compression}`` or ``images: {image: ...}``,
    ``device: <label>`` of the device's ``parameters.media.<usb|sata>``, the files
    inside the image named by the boot after it) and the seed's (``image: URL``
    with kernel, dtb, UUID and boot_part here, the device's ``device_node``).
    """

    to: Literal["usb", "sata"]
    image: FileRef | None = None
    images: dict[SafeName, FileRef] | None = None
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    kernel: str | None = None
    ramdisk: str | None = None
    dtb: str | None = None
    UUID: str | None = Field(None, pattern=r"^[0-9A-Fa-f-]{4,64}$")
    boot_part: int | None = Field(None, ge=1, le=128)
    os: Os | None = None
    device: str | None = Field(None, pattern=r"^[A-Za-z0-9._:+-]{1,100}$")
    download: MediaTool | None = None
    writer: MediaTool | None = None
    tool: MediaPrompts | None = None
    uniquify: bool | None = None

    def spec(self) -> ImageSpec | None:
        spec = self.image or (self.images or {}).get("image")
        if spec is None:
            return None
        # The seed's form gives the image's compression and checksums beside a URL.
        seed = {key: value for key in ("compression", "md5sum", "sha256sum")
                if (value := getattr(self, key)) is not None and getattr(spec, key) is None}
        return spec.model_copy(update=seed) if seed else spec

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        spec = self.spec()
        where = "image" if self.image is not None else "images.image"
        return {"image": (where, spec)} if spec is not None else {}

    def rules(self, place: str) -> list[str]:
        problems = overlay_problems(place, self.files())
        if (self.image is None) == (self.images is None):
            problems.append(f"{place}: {self.to} needs exactly one of image or images")
        elif self.spec() is None:
            problems.append(f"{place}.images.image: required but missing (the image written to the media)")
        seed = [key for key in ("kernel", "dtb", "UUID", "boot_part") if getattr(self, key) is not None]
        if seed and len(seed) < 4:
            problems += [f"{place}.{key}: required but missing with {', '.join(seed)} (or give the files in the "
                         "boot block, as LAVA does)"
                         for key in ("kernel", "dtb", "UUID", "boot_part") if key not in seed]
        return problems

    def deployment(self, place: str) -> Deployment:
        declared = super().deployment(place)
        if self.kernel and self.dtb and self.UUID and self.boot_part:
            declared.media = MediaFiles(self.kernel, self.dtb, self.ramdisk, self.UUID, self.boot_part)
        return declared


def media_node(device: Device, params: DeployMedia) -> tuple[str | None, str]:
    """The node the image is written to on the board, or None and why not.

    LAVA's devices describe their media under ``parameters.media.<usb|sata>.<label>``
    with the disk's ``uuid`` (its name under /dev/disk/by-id); the seed's give
    ``actions.deploy.methods.<usb|sata>.parameters.device_node``.
    """
    if params.device:
        media = (device.parameters.get("media") or {}).get(params.to) or {}
        entry = media.get(params.device) if isinstance(media, dict) else None
        uuid = entry.get("uuid") if isinstance(entry, dict) else None
        if not isinstance(uuid, str) or not _DISK_ID.match(uuid):
            labels = ", ".join(sorted(k for k, v in media.items() if isinstance(v, dict))) or "none"
            return None, (f"the device has no {params.to} media {params.device!r} with a uuid "
                          f"(parameters.media.{params.to}: {labels})")
        return f"/dev/disk/by-id/{uuid}", ""
    node = device.deploy_parameters(params.to).get("device_node")
    if not node:
        return None, (f"the device's {params.to} method has no parameters.device_node (or name the media with "
                      f"device: <label> of parameters.media.{params.to})")
    return str(node), ""


@known_action
class WriteImageToMedia(Action):
    """Write the image to the secondary media from the running primary boot."""

    name = "dd-image"
    aliases = ("write-image-to-media",)
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
        inside = f": kernel {params.kernel}, dtb {params.dtb}, partition {params.boot_part}" if params.kernel else ""
        self.summary = f"deploy to {params.to}{inside}"


@strategy("deploy", priority=10)
class MediaDeploy(Strategy):
    model, other_model = DeployMedia, "'to' is not usb or sata"

    @classmethod
    def device_accepts(cls, device: Device, params: DeployMedia) -> tuple[bool, str]:
        ok, reason = device.offers("deploy", params.to)
        if not ok:
            return ok, reason
        node, reason = media_node(device, params)
        return node is not None, reason

    @classmethod
    def make(cls, params: DeployMedia, block: ActionBlock, plan: BuildPlan) -> Action:
        node, _ = media_node(plan.device, params)
        top = StorageDeploy(params, block.place)
        top.internal(*[DownloadRetry(key, spec, after=overlay_steps(key, spec))
                       for key, (_, spec) in params.files().items()],
                     WriteImageToMedia(params, str(node)))
        return top
