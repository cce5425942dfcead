"""``deploy: {to: nfs}``: a kernel, a ramdisk and an NFS root for QEMU to boot (``boot: {method: qemu-nfs}``).

The images are downloaded as for tmpfs; ``nfsrootfs`` is unpacked into
this job's own directory of the device's NFS export (``nfs_root`` in the
deploy method's parameters, as for tftp), the overlay is written into it,
and the NFS server the dispatcher manages (``nfs_server: ganesha``)
exports it. The job's ``image_arg`` of nfsrootfs is not used, as in LAVA:
the kernel command line comes from the device's qemu-nfs ``append``.
"""

from __future__ import annotations

from typing import Literal

from pipeline import nfs
from pipeline.action import Action
from pipeline.actions.common.deploy import DeployAction, DeployBase, DeployDeviceEnv
from pipeline.actions.common.download import DownloadRetry
from pipeline.actions.common.image_overlays import overlay_problems, overlay_steps
from pipeline.actions.common.nfsroot import ExtractNfsRootfs, NfsExport
from pipeline.actions.common.overlay import overlay_action
from pipeline.actions.deploy.tftp import ApplyOverlayTftp
from pipeline.blocks import ActionBlock
from pipeline.errors import ConfigurationError, ProblemList
from pipeline.fields import FileRef, ImageSpec, Os, SafeName
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("deploy", "nfs")
class DeployNfs(DeployBase):
    to: Literal["nfs"]
    images: dict[SafeName, FileRef]
    os: Os | None = None

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        return {key: (f"images.{key}.url", spec) for key, spec in self.images.items()}

    def rules(self, place: str) -> list[str]:
        problems = []
        if "nfsrootfs" not in self.images:
            problems.append(f"{place}.images.nfsrootfs: required but missing (the NFS root tarball)")
        if "kernel" not in self.images:
            problems.append(f"{place}.images.kernel: required but missing (qemu-nfs boots a kernel)")
        return problems + overlay_problems(place, self.files())


@known_action
class QemuNfsExtract(ExtractNfsRootfs):
    name = "qemu-nfs-deploy"
    description = "unpack the NFS root filesystem into this job's export"
    export_method = "nfs"


@known_action
class DeployQemuNfs(DeployAction):
    name = "deploy-qemu-nfs"
    description = "download the kernel, the ramdisk and the NFS root, and apply the overlay"

    def __init__(self, params: DeployNfs, plan: BuildPlan, place: str):
        super().__init__(params, place)
        files = params.files()
        self.summary = "nfs deploy: " + ", ".join(files)
        # LAVA's order: the downloads, the root unpacked, the overlay and where it goes, the environment.
        steps: list[Action] = [DownloadRetry(key, spec, after=overlay_steps(key, spec))
                               for key, (_, spec) in files.items()]
        steps.append(QemuNfsExtract())
        lava_overlay = overlay_action(plan.stages_after(), params.os)
        if lava_overlay:
            steps += [lava_overlay, ApplyOverlayTftp()]
        try:
            if nfs.server_for(plan.device.deploy_parameters("nfs")) is not None:
                steps.append(NfsExport("nfs"))  # once the root is complete, before QEMU mounts it
        except ConfigurationError as exc:
            raise ProblemList([f"{place}: the device's nfs parameters: {exc}"]) from None
        steps.append(DeployDeviceEnv())
        self.internal(*steps)


@strategy("deploy", priority=10)
class NfsDeploy(Strategy):
    model, other_model, method = DeployNfs, "'to' is not nfs", ("deploy", "nfs")

    @classmethod
    def make(cls, params: DeployNfs, block: ActionBlock, plan: BuildPlan) -> Action:
        return DeployQemuNfs(params, plan, block.place)
