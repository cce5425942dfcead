"""Deploy strategies and actions: tmpfs, tftp, usb, sata."""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline import nfs, overlay
from pipeline.action import Action, RetryAction
from pipeline.actions.overlay import overlay_action, overlay_root
from pipeline.archive import safe_extract
from pipeline.device import Device
from pipeline.download import download
from pipeline.errors import ConfigurationError, InfrastructureError, JobError
from pipeline.job import ActionBlock, DeployMedia, DeployTftp, DeployTmpfs, ImageSpec, ProblemList
from pipeline.processes import run_command
from pipeline.strategies import BuildPlan, Strategy, known_action, strategy

if TYPE_CHECKING:
    from pipeline.context import JobContext


# ---------------------------------------------------------------- downloads


@known_action
class DownloadAction(Action):
    """Fetch one file of the job (http-download or file-download by URL)."""

    name = "http-download"
    description = "download a file of the job"
    aliases = ("file-download",)

    def __init__(self, key: str, spec: ImageSpec, place: str, into_tftp: bool = False):
        super().__init__()
        self.key, self.spec, self.place, self.into_tftp = key, spec, place, into_tftp
        if spec.url.startswith("file://"):
            self.name, self.aliases = "file-download", ("http-download",)
        self.summary = f"{key}: {spec.url}"

    def run(self, ctx: JobContext) -> None:
        base = ctx.tftp_dir if self.into_tftp and ctx.tftp_dir else ctx.workdir / "downloads"
        filename = Path(self.spec.url.split("?")[0].split("#")[0].rstrip("/")).name or self.key
        if self.spec.compression and filename.endswith(f".{self.spec.compression}"):
            filename = filename[: -len(self.spec.compression) - 1]
        if self.into_tftp:
            # The name goes into bootloader commands: plain characters only.
            filename = TFTP_UNSAFE.sub("_", filename).lstrip(".") or self.key
        if filename in (".", ".."):  # a URL ending in /.. names no file: never the directory above
            filename = self.key
        destination = base / self.key / filename
        ctx.logger.info(f"downloading {self.spec.url} as {self.key}")
        path = download(self.spec.url, destination, compression=self.spec.compression, md5sum=self.spec.md5sum,
                        sha256sum=self.spec.sha256sum, roots=ctx.file_roots, timeout=ctx.remaining(),
                        log=lambda message: ctx.logger.info(f"{self.name} {self.key}: {message}"), check=ctx.check)
        ctx.images[self.key] = path
        if self.into_tftp and ctx.tftp_dir:
            path.parent.chmod(0o755)  # a TFTP server often runs as its own user
            path.chmod(0o644)
            ctx.tftp_names[self.key] = str(path.relative_to(tftp_root(ctx.device)))


@known_action
class DownloadRetry(RetryAction):
    name = "download-retry"
    description = "download with retry"

    def __init__(self, key: str, spec: ImageSpec, place: str, into_tftp: bool = False):
        super().__init__()
        self.summary = f"download {key}"
        self.internal(DownloadAction(key, spec, place, into_tftp))


# ---------------------------------------------------------------- tmpfs (QEMU)


def image_specs(params: DeployTmpfs) -> dict[str, ImageSpec]:
    if params.image:
        return {"image": ImageSpec(url=params.image, compression=params.compression, md5sum=params.md5sum,
                                   sha256sum=params.sha256sum, root_partition=params.root_partition)}
    return dict(params.images or {})


def ramdisk_with_overlay(specs: dict[str, ImageSpec]) -> str | None:
    for key, spec in specs.items():
        if spec.format == "cpio.newc" and (spec.overlays or {}).get("lava"):
            return key
    return None


@known_action
class AppendOverlays(Action):
    name = "append-overlays"
    description = "append the overlay to the ramdisk as a second cpio archive"

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.summary = f"overlay into {key}"

    def run(self, ctx: JobContext) -> None:
        ramdisk = ctx.images[self.key]
        appended = ramdisk.with_name(ramdisk.name + ".lava")
        shutil.copyfile(ramdisk, appended)
        overlay.append_to_ramdisk(appended, ctx.overlay_dir, overlay_root(ctx))
        ctx.images[self.key] = appended
        ctx.logger.info(f"{self.key}: overlay appended ({appended.stat().st_size} bytes)")


@known_action
class ApplyOverlayGuest(Action):
    name = "apply-overlay-guest"
    description = "make the overlay a raw tar drive that the booted board unpacks"
    summary = "overlay drive"

    def run(self, ctx: JobContext) -> None:
        drive = ctx.workdir / "overlay-drive.tar"
        overlay.raw_tar_drive(ctx.overlay_tarball, drive)
        ctx.overlay_drive = drive


@known_action
class DeployImages(Action):
    name = "deployimages"
    description = "download images for QEMU and apply the overlay"

    def __init__(self, params: DeployTmpfs, plan: BuildPlan, place: str):
        super().__init__(params)
        specs = image_specs(params)
        self.summary = "deploy images: " + ", ".join(specs)
        steps: list[Action] = [DownloadRetry(key, spec, f"{place}.images.{key}") for key, spec in specs.items()]
        lava_overlay = overlay_action(plan.stages_after(), params.os)
        if lava_overlay:
            ramdisk = ramdisk_with_overlay(specs)
            steps += [lava_overlay, AppendOverlays(ramdisk) if ramdisk else ApplyOverlayGuest()]
        self.internal(*steps)


def _offers(device: Device, method: str, kind: str = "deploy") -> tuple[bool, str]:
    methods = device.deploy_methods if kind == "deploy" else device.boot_methods
    if method in methods:
        return True, ""
    offered = ", ".join(sorted(methods)) or "none"
    return False, f"device type {device.device_type!r} offers {kind} methods {offered}, not {method!r}"


@strategy("deploy", priority=10)
class TmpfsDeploy(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, DeployTmpfs):
            return False, "'to' is not tmpfs"
        return _offers(device, "tmpfs")

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        return DeployImages(block.params, plan, block.place)


# ---------------------------------------------------------------- tftp

TFTP_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def tftp_parameters(device: Device) -> dict[str, Any]:
    return dict((device.deploy_methods.get("tftp") or {}).get("parameters") or {})


def tftp_root(device: Device) -> Path:
    root = tftp_parameters(device).get("tftp_root") or device.parameters.get("tftp_root")
    if not root:
        raise ConfigurationError("the device has no tftp_root (actions.deploy.methods.tftp.parameters.tftp_root)")
    return Path(str(root))


def job_directory(root: Path, ctx: JobContext) -> Path:
    """A new directory ROOT/BOARD/JOB-xxxxxxxx of this job: never shared with another job or board."""
    board_dir = root / ctx.board_name
    board_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{TFTP_UNSAFE.sub('_', ctx.job_id)}-", dir=board_dir))
    path.chmod(0o755)
    return path


def remove_job_directory(path: Path | None) -> None:
    if path is None or not path.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()  # the board's directory, once its last job is gone
    except OSError:
        pass


@known_action
class PrepareTftpDir(Action):
    name = "prepare-tftp-dir"
    description = "make this job's own directory inside the TFTP tree"
    summary = "per-job TFTP directory"

    def run(self, ctx: JobContext) -> None:
        ctx.tftp_dir = job_directory(tftp_root(ctx.device), ctx)
        ctx.logger.info(f"TFTP directory {ctx.tftp_dir}")

    def cleanup(self, ctx: JobContext) -> None:
        if ctx.tftp_dir is not None:
            remove_job_directory(ctx.tftp_dir)
            ctx.logger.debug(f"removed the TFTP directory {ctx.tftp_dir}")


def extract_rootfs(tarball: Path, target: Path) -> int:
    """Unpack an NFS root tarball into ``target``; refuse members that would land outside."""
    return safe_extract(tarball, target, "nfsrootfs")


@known_action
class ExtractNfsRootfs(Action):
    name = "extract-nfsrootfs"
    description = "unpack the NFS root filesystem into this job's export"
    summary = "NFS root"

    def run(self, ctx: JobContext) -> None:
        ctx.nfs_root = job_directory(nfs_export_root(ctx.device), ctx)
        count = extract_rootfs(ctx.images["nfsrootfs"], ctx.nfs_root)
        ctx.nfs_root.chmod(0o755)
        ctx.logger.info(f"nfsrootfs: {count} entries in {ctx.nfs_root}")

    def cleanup(self, ctx: JobContext) -> None:
        if ctx.nfs_root is not None:
            remove_job_directory(ctx.nfs_root)
            ctx.logger.debug(f"removed the NFS root {ctx.nfs_root}")


@known_action
class NfsExport(Action):
    name = "nfs-export"
    description = "make sure the NFS server managed by the dispatcher exports the NFS roots"
    summary = "NFS server"

    def run(self, ctx: JobContext) -> None:
        server = nfs.server_for(tftp_parameters(ctx.device))
        if server is not None:
            server.ensure_export(nfs_export_root(ctx.device), log=ctx.logger.info)


def nfs_export_root(device: Device) -> Path:
    root = tftp_parameters(device).get("nfs_root") or device.parameters.get("nfs_root")
    if not root:
        raise ConfigurationError("the device has no nfs_root for NFS exports "
                                 "(actions.deploy.methods.tftp.parameters.nfs_root)")
    return Path(str(root))


UBOOT_HEADER = 64
UBOOT_MAGIC = b"\x27\x05\x19\x56"


def has_uboot_header(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == UBOOT_MAGIC


@known_action
class ExtractOverlayRamdisk(Action):
    name = "extract-overlay-ramdisk"
    description = "remove the u-boot header of the ramdisk before the overlay is added"
    summary = "ramdisk without header"

    def run(self, ctx: JobContext) -> None:
        ramdisk = ctx.images["ramdisk"]
        data = ramdisk.read_bytes()
        if len(data) < UBOOT_HEADER or data[:4] != UBOOT_MAGIC:
            raise JobError("ramdisk: ramdisk-type is u-boot but the file has no u-boot header")
        size = int.from_bytes(data[12:16], "big")  # ih_size: the payload after the header
        if size > len(data) - UBOOT_HEADER:
            raise JobError(f"ramdisk: the u-boot header announces {size} bytes but the file holds "
                           f"{len(data) - UBOOT_HEADER}")
        bare = ramdisk.with_name(ramdisk.name + ".bare")
        bare.write_bytes(data[UBOOT_HEADER:UBOOT_HEADER + size])
        ctx.images["ramdisk-bare"] = bare
        ctx.logger.info(f"ramdisk: u-boot header removed ({size} bytes of payload)")


def overlay_target(root: Path, inside: str) -> Path:
    """``root/inside`` for the overlay, refusing a path that passes through a link of the root filesystem."""
    path = root
    for part in PurePosixPath(inside).parts:
        if part in ("/", "."):
            continue
        if part == "..":
            raise ConfigurationError(f"lava_test_results_dir {inside!r} leaves the root filesystem")
        path = path / part
        if path.is_symlink():
            raise JobError(f"nfsrootfs: {inside} is a symbolic link in the root filesystem: the overlay "
                           "cannot be written there")
        if not path.exists():
            path.mkdir()
        elif not path.is_dir():
            raise JobError(f"nfsrootfs: {inside} is not a directory in the root filesystem")
    return path


@known_action
class ApplyOverlayTftp(Action):
    name = "apply-overlay-tftp"
    description = "add the overlay to the ramdisk or the NFS root"
    summary = "apply the overlay"

    def run(self, ctx: JobContext) -> None:
        if ctx.nfs_root is not None:
            target = overlay_target(ctx.nfs_root, overlay_root(ctx))
            safe_extract(ctx.overlay_tarball, target, "overlay")
            ctx.logger.info(f"overlay unpacked into the NFS root at {overlay_root(ctx)}")
            return
        key = "ramdisk-bare" if "ramdisk-bare" in ctx.images else "ramdisk"
        ramdisk = ctx.images[key]
        if key == "ramdisk" and has_uboot_header(ramdisk):
            raise JobError("ramdisk: the file has a u-boot header: add 'ramdisk-type: u-boot' to the deploy "
                           "so that the overlay goes inside the ramdisk")
        overlay.append_to_ramdisk(ramdisk, ctx.overlay_dir, overlay_root(ctx))
        ctx.logger.info(f"overlay appended to the ramdisk ({ramdisk.stat().st_size} bytes)")


MKIMAGE_ARCH = {"arm": "arm", "armhf": "arm", "arm64": "arm64", "aarch64": "arm64", "x86_64": "x86_64",
                "riscv64": "riscv", "mips": "mips", "powerpc": "powerpc"}


@known_action
class CompressRamdisk(Action):
    name = "compress-ramdisk"
    description = "put the u-boot header back on the ramdisk"
    summary = "ramdisk with header"

    def __init__(self, arch: str):
        super().__init__()
        self.arch = MKIMAGE_ARCH.get(arch, arch)

    def run(self, ctx: JobContext) -> None:
        bare = ctx.images.pop("ramdisk-bare")
        target = ctx.images["ramdisk"]
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
class TftpDeployAction(Action):
    name = "tftp-deploy"
    description = "download files into the TFTP tree and apply the overlay"

    def __init__(self, params: DeployTftp, plan: BuildPlan, place: str):
        super().__init__(params)
        files = {key: getattr(params, key) for key in ("kernel", "dtb", "ramdisk", "nfsrootfs") if getattr(params, key)}
        self.summary = "tftp deploy: " + ", ".join(files)
        steps: list[Action] = [PrepareTftpDir()]
        steps += [DownloadRetry(key, spec, f"{place}.{key}", into_tftp=key != "nfsrootfs")
                  for key, spec in files.items()]
        managed_nfs = False
        if params.nfsrootfs:
            steps.append(ExtractNfsRootfs())
            try:
                managed_nfs = nfs.server_for(tftp_parameters(plan.device)) is not None
            except ConfigurationError as exc:
                raise_problem(place, f"the device's tftp parameters: {exc}")
        lava_overlay = overlay_action(plan.stages_after(), params.os)
        uboot_ramdisk = params.ramdisk is not None and (params.ramdisk_type == "u-boot"
                                                        or params.ramdisk.header == "u-boot")
        if lava_overlay:
            if not params.nfsrootfs and not params.ramdisk:
                raise_problem(place, "the test actions need a ramdisk or an nfsrootfs to carry the overlay")
            steps.append(lava_overlay)
            if uboot_ramdisk and not params.nfsrootfs:
                steps.append(ExtractOverlayRamdisk())
            steps.append(ApplyOverlayTftp())
            if uboot_ramdisk and not params.nfsrootfs:
                steps.append(CompressRamdisk(str(plan.device.parameters.get("arch", "arm"))))
        if managed_nfs:
            # Exported once the root is complete (the overlay in it), before the board mounts it.
            steps.append(NfsExport())
        self.internal(*steps)


def raise_problem(place: str, message: str) -> None:
    raise ProblemList([f"{place}: {message}"])


@strategy("deploy", priority=10)
class TftpDeploy(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, DeployTftp):
            return False, "'to' is not tftp"
        return _offers(device, "tftp")

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        return TftpDeployAction(block.params, plan, block.place)


# ---------------------------------------------------------------- usb / sata


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
        url = ctx.serve_file(ctx.images["image"])
        node = shlex.quote(self.device_node)
        ctx.logger.info(f"writing {ctx.images['image'].name} to {self.device_node} from {url}")
        # wget's own exit status tells a failed transfer (a pipe into dd would hide it).
        status, output = ctx.connection.run(
            f"wget -q -O {node} {url} && sync && (blockdev --rereadpt {node} 2>/dev/null || true)",
            self.timeout, self.name)
        if status != 0:
            raise InfrastructureError(f"writing the image to {self.device_node} failed (exit {status}): "
                                      f"{output.strip()[-200:]}")


@strategy("deploy", priority=10)
class MediaDeploy(Strategy):
    @classmethod
    def accepts(cls, device: Device, params: Any) -> tuple[bool, str]:
        if not isinstance(params, DeployMedia):
            return False, "'to' is not usb or sata"
        ok, reason = _offers(device, params.to)
        if not ok:
            return ok, reason
        method = device.deploy_methods.get(params.to) or {}
        if not (method.get("parameters") or {}).get("device_node"):
            return False, f"the device's {params.to} method has no parameters.device_node"
        return True, ""

    @classmethod
    def build(cls, block: ActionBlock, plan: BuildPlan) -> Action:
        params: DeployMedia = block.params
        node = plan.device.deploy_methods[params.to]["parameters"]["device_node"]
        top = StorageDeploy(params)
        top.internal(DownloadRetry("image", ImageSpec(url=params.image, compression=params.compression,
                                                      md5sum=params.md5sum, sha256sum=params.sha256sum),
                                   f"{block.place}.image"),
                     WriteImageToMedia(params, str(node)))
        return top


@known_action
class StorageDeploy(Action):
    name = "storage-deploy"
    description = "deploy an unchanged image to secondary media"

    def __init__(self, params: DeployMedia):
        super().__init__(params)
        self.summary = f"deploy to {params.to}: kernel {params.kernel}, dtb {params.dtb}, partition {params.boot_part}"
