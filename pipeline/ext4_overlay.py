"""Files written into an ext4 filesystem image without mounting it (debugfs from e2fsprogs).

What LAVA's ``append-overlays`` does for an ``ext4`` image: an overlay (a
tarball unpacked here, or one file) goes in at its ``path``. The image is
never mounted: debugfs writes the files, so nothing of the worker is
exposed to the image's contents. Directories that exist are kept, files
that exist are replaced; any other debugfs error fails the job with it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from pipeline.errors import InfrastructureError, JobError
from pipeline.processes import ProcessRegistry, run_command

# debugfs's messages for what the script expects and tolerates: a directory made twice, a file not there to remove.
TOLERATED = ("Ext2 directory already exists", "File not found by ext2_lookup", "debugfs 1.")
ECHOED = ("debugfs:", "Allocated inode")


def _quoted(path: str) -> str:
    if any(char in path for char in '"\n\r\\'):
        raise JobError(f"overlay: {path!r}: a name with a quote, backslash or line break cannot be written")
    return f'"{path}"'


def parents(target: str) -> list[str]:
    """debugfs commands that make the directories above ``target`` (those that exist are kept)."""
    return [f"mkdir {_quoted(str(parent))}" for parent in reversed(PurePosixPath(target).parents)
            if str(parent) != "/"]


def tree_script(source: Path, target: str) -> list[str]:
    """debugfs commands that copy the tree ``source`` into the image at ``target`` (an absolute path)."""
    root = PurePosixPath(target)
    lines = parents(str(root / "x"))
    for directory, dirs, files in os.walk(source):
        here = root / Path(directory).relative_to(source).as_posix()
        for name in sorted(dirs):
            local = Path(directory) / name
            if local.is_symlink():
                files.append(name)
            else:
                lines.append(f"mkdir {_quoted(str(here / name))}")
        for name in sorted(files):
            lines += file_script(Path(directory) / name, str(here / name))
        dirs[:] = [name for name in sorted(dirs) if not (Path(directory) / name).is_symlink()]
    return lines


def file_script(local: Path, target: str) -> list[str]:
    """debugfs commands that put one file (or symbolic link) at ``target``, replacing what is there."""
    lines = [f"rm {_quoted(target)}"]
    if local.is_symlink():
        return lines + [f"symlink {_quoted(target)} {_quoted(os.readlink(local))}"]
    if not local.is_file():
        return []  # devices, sockets, fifos of a tarball: not part of an overlay
    return lines + [f"write {_quoted(str(local))} {_quoted(target)}"]


def run_script(image: Path, lines: list[str], timeout: float, registry: ProcessRegistry | None = None) -> None:
    """Run the debugfs commands on ``image``; raise JobError on any error but the tolerated ones."""
    debugfs = shutil.which("debugfs") or next((p for p in ("/usr/sbin/debugfs", "/sbin/debugfs")
                                               if os.path.exists(p)), None)
    if debugfs is None:
        raise InfrastructureError("append-overlays: debugfs (e2fsprogs) is not installed on this worker")
    script = image.with_name(image.name + ".debugfs")
    script.write_text("".join(line + "\n" for line in lines))
    try:
        output = run_command([debugfs, "-w", "-f", str(script), str(image)], timeout, "debugfs", registry=registry)
    finally:
        script.unlink(missing_ok=True)
    errors = [line for line in output.splitlines() if line.strip() and not line.startswith(ECHOED)
              and not any(text in line for text in TOLERATED)]
    if errors:
        raise JobError(f"append-overlays: writing into {image.name} failed: {' | '.join(errors[:3])}")
