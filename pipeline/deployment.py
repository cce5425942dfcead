"""What a deploy hands to the boot after it: a typed Deployment, not the deploy's keys.

A deploy method declares its Deployment from the job when the pipeline is
built (``ActionBase.deployment``): the method, the image labels with their
``image_arg``, which ramdisk carries the overlay, the files inside an image
written to secondary media. A boot strategy reads that declaration to
choose its actions (``BuildPlan.deployment()``). When the job runs, the
deploy's top action puts a fresh copy in the context (``ctx.deployment``)
and its steps fill in what they produced: local files by label, TFTP names,
the NFS root, the overlay drive. The boot's actions read it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

UBOOT_HEADER = 64  # bytes of a legacy u-boot image header
UBOOT_MAGIC = b"\x27\x05\x19\x56"


@dataclass(frozen=True)
class MediaFiles:
    """The files inside an image written to secondary media, as the bootloader loads them."""

    kernel: str
    dtb: str
    ramdisk: str | None
    root_uuid: str
    boot_part: int


@dataclass
class Deployment:
    method: str  # the deploy's ``to:`` (tmpfs, tftp, usb, sata, nfs)
    place: str  # the deploy block's place in the job, for messages (actions[0].deploy)

    # Declared from the job when the pipeline is built.
    image_args: dict[str, str | None] = field(default_factory=dict)  # label -> image_arg (None: the device's)
    overlay_ramdisk: str | None = None  # the label of the ramdisk the overlay is appended to, if one is
    media: MediaFiles | None = None  # an image written to secondary media: the files inside it
    persistent_nfs: str | None = None  # ``host:/path`` of an NFS root that stays on its server
    overlay_transfer: bool = False  # the booted board fetches the overlay (the root cannot be written here)
    kernel_type: str | None = None  # the deploy's kernel.type (zimage, uimage, image): the u-boot boot command

    # Filled by the deploy's actions while it runs.
    images: dict[str, Path] = field(default_factory=dict)  # label -> the local file (downloaded, maybe changed)
    tftp_dir: Path | None = None  # this job's own directory inside the TFTP tree
    tftp_names: dict[str, str] = field(default_factory=dict)  # label -> path relative to the TFTP root
    nfs_root: Path | None = None  # the unpacked NFS root filesystem (inside the NFS export)
    overlay_drive: Path | None = None  # the overlay as a raw tar drive, for a disk-image boot
    bare_ramdisk: Path | None = None  # the ramdisk without its u-boot header while the overlay goes in

    def fresh(self) -> Deployment:
        """A copy with the declared fields only: what a run of the deploy starts from."""
        return replace(self, images={}, tftp_dir=None, tftp_names={}, nfs_root=None, overlay_drive=None,
                       bare_ramdisk=None)

    def has_uboot_header(self, label: str) -> bool:
        """The deployed file ``label`` starts with a legacy u-boot header (False if there is no such file)."""
        return has_uboot_header(self.images.get(label))


def has_uboot_header(path: Path | None) -> bool:
    if path is None or not path.exists():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == UBOOT_MAGIC
