"""``boot: {method: qemu-nfs}``: QEMU boots the kernel of a nfs deploy with its root on NFS.

The command line is the device's ``qemu-nfs`` method's (as for qemu), with
the job's kernel and ramdisk by their ``image_arg``; the kernel command
line is the method's ``append``: console, ``root=/dev/nfs``, its
``nfsrootargs`` with ``{NFS_SERVER_IP}`` (the device's ``nfs_server_ip``,
else its ``dispatcher_ip``) and ``{NFSROOTFS}`` (this job's root as the
server exports it) substituted, then ``rw`` and its ``ipargs``.
"""

from __future__ import annotations

from typing import Literal

from pipeline.action import Action
from pipeline.actions.boot.qemu import BootImageRetry, BootQemuImage, CallQemuAction, checked_deployment
from pipeline.actions.common.shell import BootBase, shell_steps
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.errors import ConfigurationError, JobError
from pipeline.registry import block_model, known_action, strategy
from pipeline.strategy import BuildPlan, Strategy


@block_model("boot", "qemu-nfs")
class BootQemuNfs(BootBase):
    method: Literal["qemu-nfs"]


@known_action
class CallQemuNfsAction(CallQemuAction):
    method = "qemu-nfs"
    not_arguments = ("nfsrootfs",)  # LAVA ignores its image_arg too: the root is in the kernel command line

    def extra_arguments(self, ctx: JobContext, params: dict[str, object]) -> list[str]:
        append = params.get("append")
        if not isinstance(append, dict) or not append.get("nfsrootargs"):
            raise ConfigurationError("the qemu-nfs method has no parameters.append.nfsrootargs")
        deployment = ctx.deployed()
        if deployment.nfs_root is None:
            raise JobError("qemu-nfs: the deploy unpacked no NFS root")
        server = ctx.device.parameters.get("nfs_server_ip") or ctx.device.parameters.get("dispatcher_ip")
        if not server:
            raise ConfigurationError("qemu-nfs: the device has neither parameters.nfs_server_ip nor dispatcher_ip")
        nfsroot = (str(append["nfsrootargs"]).replace("{NFS_SERVER_IP}", str(server))
                   .replace("{NFSROOTFS}", ctx.device.nfs_export_path(deployment.nfs_root, "nfs")))
        words = [f"console={append.get('console', 'ttyAMA0')}", "root=/dev/nfs", f"{nfsroot} rw"]
        if append.get("ipargs"):
            words.append(str(append["ipargs"]))
        return ["-append", " ".join(words)]


@strategy("boot", priority=10)
class QemuNfsBoot(Strategy):
    model, other_model, method = BootQemuNfs, "method is not qemu-nfs", ("boot", "qemu-nfs")

    @classmethod
    def make(cls, params: BootQemuNfs, block: ActionBlock, plan: BuildPlan) -> Action:
        # The NFS root is served, not given to QEMU: its image_arg is not used (as in LAVA).
        checked_deployment(block, plan, "qemu-nfs", "nfs", ignored=("nfsrootfs",))
        start = BootQemuImage()
        start.internal(CallQemuNfsAction())
        top = BootImageRetry(params)
        top.internal(start, *shell_steps(params))
        return top
