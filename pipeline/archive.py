"""Safe extraction of tarballs from jobs (test definitions, NFS root filesystems).

A member that would escape the target (an absolute path, ``..``, a
relative link pointing out, a member written through a link) or a device
file is refused with a JobError before anything is written. Absolute
symbolic links are kept: in a root filesystem they name a path on the
board (``/etc/localtime -> /usr/share/zoneinfo/UTC``), and since no member
may be written through a link, extraction never follows one.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import JobError


def check_members(archive: tarfile.TarFile, what: str) -> list[tarfile.TarInfo]:
    """Every member, or a JobError naming the first one that could write outside the target."""
    members = archive.getmembers()
    links = {PurePosixPath(m.name) for m in members if m.issym()}
    seen: set[PurePosixPath] = set()
    for member in members:
        name = member.name
        path = PurePosixPath(name)
        if path in links and path in seen:
            raise JobError(f"{what}: member {name!r} appears twice and one is a symbolic link: it would be "
                           "written through the link")
        seen.add(path)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise JobError(f"{what}: member {name!r} is a device file or another special file")
        if path.is_absolute():
            raise JobError(f"{what}: member {name!r} has an absolute path")
        if ".." in path.parts:
            raise JobError(f"{what}: member {name!r} leaves the target directory ('..')")
        if any(parent in links for parent in path.parents):
            raise JobError(f"{what}: member {name!r} would be written through a symbolic link")
        if member.issym() or member.islnk():
            target = PurePosixPath(member.linkname)
            if member.issym():
                if not target.is_absolute() and _escapes(path.parent / target):
                    raise JobError(f"{what}: link {name!r} -> {member.linkname!r} points out of the target")
            elif target.is_absolute() or _escapes(target):
                raise JobError(f"{what}: hard link {name!r} -> {member.linkname!r} points out of the target")
            elif target in links or any(parent in links for parent in target.parents):
                raise JobError(f"{what}: hard link {name!r} -> {member.linkname!r} goes through a symbolic link")
    return members


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            return True
    return False


def safe_extract(tarball: Path, target: Path, what: str) -> int:
    """Extract a tarball (any compression tarfile reads) into ``target``; return the member count."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r:*") as archive:
            members = check_members(archive, what)
            # Every member passed the checks above, so tarfile's own filter can keep
            # what a root filesystem needs (absolute links, permissions).
            archive.extractall(target, members=members, filter="fully_trusted", numeric_owner=os.getuid() == 0)
    except tarfile.TarError as exc:
        raise JobError(f"{what}: not a readable tarball: {exc}") from None
    except (EOFError, zlib.error, OSError) as exc:
        raise JobError(f"{what}: the tarball cannot be unpacked: {exc}") from None
    return len(members)
