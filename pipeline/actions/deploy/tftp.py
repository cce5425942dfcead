"""``deploy: {to: tftp}``: kernel, dtb and ramdisk into this job's TFTP directory, or an NFS root.

The overlay goes into the NFS root, or is appended to the ramdisk (taking
a legacy u-boot header off first and putting it back after, when the
ramdisk has one).
"""

from __future__ import annotations

import re
from typing import Literal

from pipeline import nfs, overlay
from pipeline.action import Action
from pipeline.actions.common.deploy import DeployAction, DeployBase, DeployDeviceEnv
from pipeline.actions.common.download import DownloadRetry
from pipeline.actions.common.image_overlays import overlay_problems, overlay_steps
from pipeline.actions.common.nfsroot import ExtractNfsRootfs, JobDirectoryAction, NfsExport, overlay_target
from pipeline.actions.common.overlay import overlay_action, overlay_root
from pipeline.archive import safe_extract
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.deployment import UBOOT_HEADER, UBOOT_MAGIC, Deployment, has_uboot_header
from pipeline.errors import Bug, ConfigurationError, JobError, ProblemList
from pipeline.fields import OPERATING_SYSTEMS, Field, FileRef, ImageSpec, Os, Strict
from pipeline.processes import run_command
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy

FILES = ("kernel", "dtb", "ramdisk", "nfsrootfs", "modules")
_RELATIVE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]+$")
MKIMAGE_ARCH = {"arm": "arm", "armhf": "arm", "arm64": "arm64", "aarch64": "arm64", "x86_64": "x86_64",
                "riscv64": "riscv", "mips": "mips", "powerpc": "powerpc"}


class PersistentNfs(Strict):
    """An NFS root that stays on a server (``address: host:/path``): nothing is downloaded for it."""

    address: str = Field(pattern=r"^[A-Za-z0-9._-]+:/[A-Za-z0-9._/+-]*$")
    install_overlay: bool | None = None


@block_model("deploy", "tftp")
class DeployTftp(DeployBase):
    to: Literal["tftp"]
    kernel: FileRef | None = None
    dtb: FileRef | None = None
    ramdisk: FileRef | None = None
    ramdisk_type: Literal["u-boot"] | None = Field(None, alias="ramdisk-type")
    nfsrootfs: FileRef | None = None
    modules: FileRef | None = None  # LAVA's kernel modules tarball: downloaded, not unpacked here
    persistent_nfs: PersistentNfs | None = None
    os: Os | None = None

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        return {key: (key, spec) for key in FILES if (spec := getattr(self, key)) is not None}

    def rules(self, place: str) -> list[str]:
        problems = overlay_problems(place, self.files())
        if not self.kernel:
            problems.append(f"{place}.kernel: required but missing (tftp needs a kernel to deploy)")
        if self.nfsrootfs and self.persistent_nfs:
            problems.append(f"{place}: nfsrootfs and persistent_nfs cannot be used together")
        if self.nfsrootfs:
            spec = self.nfsrootfs
            if spec.compression is None and not re.search(r"\.(tar\.(gz|bz2|xz)|tgz|tbz2?|txz)$", spec.url):
                problems.append(f"{place}.nfsrootfs: {spec.url!r} must be a gz, bz2 or xz tarball "
                                "(.tar.gz, .tgz, .tar.bz2, .tar.xz) or say compression: gz|bz2|xz")
            if spec.prefix is not None and not _RELATIVE.match(spec.prefix):
                problems.append(f"{place}.nfsrootfs.prefix: {spec.prefix!r} must be a relative path inside the "
                                "tarball (letters, digits, '.', '_', '-', '/'; no '..')")
            if self.os is None:
                problems.append(f"{place}.os: required with nfsrootfs (one of {', '.join(OPERATING_SYSTEMS)})")
        if self.ramdisk_type and not self.ramdisk:
            problems.append(f"{place}.ramdisk-type: given without a ramdisk")
        return problems

    def deployment(self, place: str) -> Deployment:
        declared = super().deployment(place)
        declared.persistent_nfs = self.persistent_nfs.address if self.persistent_nfs else None
        declared.overlay_transfer = self.persistent_nfs is not None
        declared.kernel_type = self.kernel.type if self.kernel else None
        return declared

    def uboot_ramdisk(self) -> bool:
        """The ramdisk has a legacy u-boot header (the job says so)."""
        return self.ramdisk is not None and (self.ramdisk_type == "u-boot" or self.ramdisk.header == "u-boot")


@known_action
class PrepareTftpDir(JobDirectoryAction):
    name = "prepare-tftp-dir"
    description = "make this job's own directory inside the TFTP tree"
    summary = "per-job TFTP directory"
    what = "TFTP directory"

    def run(self, ctx: JobContext) -> None:
        made = ctx.deployed().tftp_dir = self.make_directory(ctx.device.tftp_root(), ctx)
        ctx.logger.info(f"TFTP directory {made}")


@known_action
class ExtractOverlayRamdisk(Action):
    name = "extract-overlay-ramdisk"
    description = "remove the u-boot header of the ramdisk before the overlay is added"
    summary = "ramdisk without header"

    def run(self, ctx: JobContext) -> None:
        deployment = ctx.deployed()
        ramdisk = deployment.images["ramdisk"]
        data = ramdisk.read_bytes()
        if len(data) < UBOOT_HEADER or data[:4] != UBOOT_MAGIC:
            raise JobError("ramdisk: ramdisk-type is u-boot but the file has no u-boot header")
        size = int.from_bytes(data[12:16], "big")  # ih_size: the payload after the header
        if size > len(data) - UBOOT_HEADER:
            raise JobError(f"ramdisk: the u-boot header announces {size} bytes but the file holds "
                           f"{len(data) - UBOOT_HEADER}")
        bare = ramdisk.with_name(ramdisk.name + ".bare")
        bare.write_bytes(data[UBOOT_HEADER:UBOOT_HEADER + size])
        deployment.bare_ramdisk = bare
        ctx.logger.info(f"ramdisk: u-boot header removed ({size} bytes of payload)")


@known_action
class ApplyOverlayTftp(Action):
    name = "apply-overlay-tftp"
    description = "add the overlay to the ramdisk or the NFS root"
    summary = "apply the overlay"

    def run(self, ctx: JobContext) -> None:
        deployment = ctx.deployed()
        if deployment.nfs_root is not None:
            target = overlay_target(deployment.nfs_root, overlay_root(ctx))
            safe_extract(ctx.overlay_files()[0], target, "overlay")
            ctx.logger.info(f"overlay unpacked into the NFS root at {overlay_root(ctx)}")
            return
        ramdisk = deployment.bare_ramdisk
        if ramdisk is None:
            ramdisk = deployment.images["ramdisk"]
            if has_uboot_header(ramdisk):
                raise JobError("ramdisk: the file has a u-boot header: add 'ramdisk-type: u-boot' to the deploy "
                               "so that the overlay goes inside the ramdisk")
        overlay.append_to_ramdisk(ramdisk, ctx.overlay_files()[1], overlay_root(ctx))
        ctx.logger.info(f"overlay appended to the ramdisk ({ramdisk.stat().st_size} bytes)")


@known_action
class CompressRamdisk(Action):
    name = "compress-ramdisk"
    description = "put the u-boot header back on the ramdisk"
    summary = "ramdisk with header"

    def __init__(self, arch: str):
        super().__init__()
        self.arch = MKIMAGE_ARCH.get(arch, arch)

    def run(self, ctx: JobContext) -> None:
        deployment = ctx.deployed()
        bare, deployment.bare_ramdisk = deployment.bare_ramdisk, None
        if bare is None:
            raise Bug("compress-ramdisk: extract-overlay-ramdisk left no ramdisk without header")
        target = deployment.images["ramdisk"]
        with open(target, "rb") as handle:  # still the downloaded file: keep its image name
            name = handle.read(UBOOT_HEADER)[32:64].split(b"\0")[0].decode("ascii", "replace")
        name = re.sub(r"[^A-Za-z0-9 ._+:-]", "_", name).strip() or "ramdisk"
        output = run_command(["mkimage", "-A", self.arch, "-O", "linux", "-T", "ramdisk", "-C", "none",
                              "-n", name, "-d", str(bare), str(target)],
                             ctx.remaining(), "mkimage", registry=ctx.processes)
        bare.unlink()
        target.chmod(0o644)
        for line in output.strip().splitlines():
            ctx.logger.debug(f"mkimage: {line}")
        ctx.logger.info(f"u-boot header restored on {target.name} ({target.stat().st_size} bytes)")


@known_action
class PrepareTftpOverlay(Action):
    name = "prepare-tftp-overlay"
    description = "prepare the downloaded files: unpack the NFS root, put the overlay into it or the ramdisk"
    summary = "prepare the files"


@known_action
class TftpDeployAction(DeployAction):
    name = "tftp-deploy"
    description = "download files into the TFTP tree and apply the overlay"

    def __init__(self, params: DeployTftp, plan: BuildPlan, place: str):
        super().__init__(params, place)
        files = params.files()
        self.summary = "tftp deploy: " + ", ".join(files)
        lava_overlay = overlay_action(plan.stages_after(), params.os)
        # LAVA's order: the overlay, the downloads, the files prepared (prepare-tftp-overlay), the environment.
        steps: list[Action] = [lava_overlay] if lava_overlay else []
        steps.append(PrepareTftpDir())
        steps += [DownloadRetry(key, spec, into_tftp=key not in ("nfsrootfs", "modules"),
                                after=overlay_steps(key, spec))
                  for key, (_, spec) in files.items()]
        prepare: list[Action] = []
        managed_nfs = False
        if params.nfsrootfs:
            prepare.append(ExtractNfsRootfs(params.nfsrootfs.prefix))
            try:
                managed_nfs = nfs.server_for(plan.device.deploy_parameters("tftp")) is not None
            except ConfigurationError as exc:
                raise ProblemList([f"{place}: the device's tftp parameters: {exc}"]) from None
        uboot_ramdisk = params.uboot_ramdisk() and not params.nfsrootfs
        if lava_overlay and params.persistent_nfs:
            pass  # the booted board fetches the overlay (overlay-unpack): the share is another server's
        elif lava_overlay:
            if not params.nfsrootfs and not params.ramdisk:
                raise ProblemList([f"{place}: the test actions need a ramdisk or an nfsrootfs to carry the overlay"])
            if uboot_ramdisk:
                prepare.append(ExtractOverlayRamdisk())
            prepare.append(ApplyOverlayTftp())
            if uboot_ramdisk:
                prepare.append(CompressRamdisk(str(plan.device.parameters.get("arch", "arm"))))
        if prepare:
            files_step = PrepareTftpOverlay()
            files_step.internal(*prepare)
            steps.append(files_step)
        if managed_nfs:
            # Exported once the root is complete (the overlay in it), before the board mounts it.
            steps.append(NfsExport())
        steps.append(DeployDeviceEnv())
        self.internal(*steps)


@strategy("deploy", priority=10)
class TftpDeploy(Strategy):
    model, other_model, method = DeployTftp, "'to' is not tftp", ("deploy", "tftp")

    @classmethod
    def make(cls, params: DeployTftp, block: ActionBlock, plan: BuildPlan) -> Action:
        return TftpDeployAction(params, plan, block.place)
