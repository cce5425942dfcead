"""Per-job directories in trees other jobs share (TFTP, NFS exports), and an NFS root filesystem in one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from pipeline import nfs
from pipeline.action import Action
from pipeline.actions.common.download import UNSAFE_NAME
from pipeline.archive import safe_extract
from pipeline.context import JobContext
from pipeline.errors import ConfigurationError, JobError
from pipeline.registry import known_action


def job_directory(root: Path, ctx: JobContext) -> Path:
    """A new directory ROOT/BOARD/JOB-xxxxxxxx of this job: never shared with another job or board."""
    board_dir = root / ctx.board_name
    board_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{UNSAFE_NAME.sub('_', ctx.job_id)}-", dir=board_dir))
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


class JobDirectoryAction(Action):
    """An action that makes this job's own directory in a shared tree; the directory goes with the job."""

    what = "directory"  # for the log: "TFTP directory", "NFS root"

    def __init__(self) -> None:
        super().__init__()
        self.made: Path | None = None

    def make_directory(self, root: Path, ctx: JobContext) -> Path:
        self.made = job_directory(root, ctx)
        return self.made

    def cleanup(self, ctx: JobContext) -> None:
        if self.made is not None:
            remove_job_directory(self.made)
            ctx.logger.debug(f"removed the {self.what} {self.made}")


def extract_rootfs(tarball: Path, target: Path) -> int:
    """Unpack an NFS root tarball into ``target``; refuse members that would land outside."""
    return safe_extract(tarball, target, "nfsrootfs")


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
class ExtractNfsRootfs(JobDirectoryAction):
    name = "extract-nfsrootfs"
    description = "unpack the NFS root filesystem into this job's export"
    summary = "NFS root"
    what = "NFS root"
    export_method = "tftp"  # the deploy method whose parameters name the export (nfs_root)

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__()
        self.prefix = prefix  # where the root is inside the tarball (checked relative by the job's model)

    def run(self, ctx: JobContext) -> None:
        deployment = ctx.deployed()
        made = deployment.nfs_root = self.make_directory(ctx.device.nfs_export_root(self.export_method), ctx)
        count = extract_rootfs(deployment.images["nfsrootfs"], made)
        made.chmod(0o755)
        if self.prefix:
            root = (made / self.prefix).resolve()
            if not root.is_dir() or not root.is_relative_to(made.resolve()):
                raise JobError(f"nfsrootfs: the tarball has no directory {self.prefix!r} (prefix)")
            deployment.nfs_root = root
        ctx.logger.info(f"nfsrootfs: {count} entries in {made}")


@known_action
class NfsExport(Action):
    name = "nfs-export"
    description = "make sure the NFS server managed by the dispatcher exports the NFS roots"
    summary = "NFS server"

    def __init__(self, method: str = "tftp") -> None:
        super().__init__()
        self.method = method  # the deploy method whose parameters name the server and the export

    def run(self, ctx: JobContext) -> None:
        server = nfs.server_for(ctx.device.deploy_parameters(self.method))
        if server is not None:
            server.ensure_export(ctx.device.nfs_export_root(self.method), log=ctx.logger.info)
