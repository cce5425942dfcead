"""File access under a job's folder that never follows a link out of it.

A test definition repository or tarball is hostile: any name in it may be
a symbolic link to a file of the worker (``run.sh -> /usr/local/bin/tool``),
or a directory on the way may be one. Every file the overlay builder and
the test-definition fetchers write or read under a job's folder goes
through this module, which walks the path one component at a time from a
directory descriptor with ``O_NOFOLLOW``: a link anywhere on the way is
refused, never followed, and no check-then-open race is possible.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pipeline.errors import JobError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


def parts_of(relpath: str | PurePosixPath, what: str) -> list[str]:
    """The components of a relative path that stays inside its root."""
    path = PurePosixPath(relpath)
    parts = [part for part in path.parts if part != "."]
    if path.is_absolute() or ".." in parts or not parts:
        raise JobError(f"{what}: {str(relpath)!r} must be a relative path inside the directory")
    return parts


def _open_dir(root: Path, parts: list[str], what: str, relpath: str, create: bool) -> int:
    """A descriptor of root/parts..., each component opened with O_NOFOLLOW (made when ``create``)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # root: the job's own folder
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise JobError(f"{what}: {relpath!r} does not exist") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # ELOOP: a link (O_NOFOLLOW); ENOTDIR: a file
                raise JobError(f"{what}: {relpath!r}: {part!r} is {_kind(fd, part)}, not a directory "
                               "(the dispatcher follows no link in a job's folder)") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(dir_fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a file" if stat.S_ISREG(mode) else "a special file"


def write_under(root: Path, relpath: str, data: str | bytes, what: str, mode: int = 0o644,
                make_parents: bool = False) -> None:
    """Write a new file root/relpath (a regular file already there is replaced; a link or directory refused)."""
    parts = parts_of(relpath, what)
    fd = _open_dir(root, parts[:-1], what, relpath, make_parents)
    name = parts[-1]
    try:
        kind = _kind(fd, name)
        if kind == "a file":
            os.unlink(name, dir_fd=fd)  # a new inode: never written through a hard link either
        elif kind != "missing":
            raise JobError(f"{what}: {relpath!r} is {kind}: the dispatcher writes this file "
                           "itself and follows no link")
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(out, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # exact, whatever the umask
        handle.write(data.encode() if isinstance(data, str) else data)


def read_under(root: Path, relpath: str, what: str, limit: int) -> bytes:
    """The bytes of the regular file root/relpath (no link followed), refused past ``limit`` bytes."""
    parts = parts_of(relpath, what)
    fd = _open_dir(root, parts[:-1], what, relpath, False)
    try:
        kind = _kind(fd, parts[-1])
        if kind != "a file":
            raise JobError(f"{what}: {relpath!r} is {kind}, not a file" if kind != "missing"
                           else f"{what}: {relpath!r} does not exist")
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(handle, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise JobError(f"{what}: {relpath!r} is not a regular file")
        data = source.read(limit + 1)
    if len(data) > limit:
        raise JobError(f"{what}: {relpath!r} is larger than {limit} bytes")
    return data


def resolve_beneath(relpath: str, readlink: Callable[[str], str | None], what: str) -> str:
    """``relpath`` with its links resolved as the kernel would, refused if it leaves its root.

    ``readlink(path)`` gives the target of the link at ``path`` (relative to
    the root, already free of links) or None when it is not a link. An
    absolute target, a ``..`` above the root or a loop is refused.
    """
    pending = list(reversed(PurePosixPath(relpath).parts))
    if pending and pending[-1] == "/":
        raise JobError(f"{what}: {relpath!r} is an absolute path")
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise JobError(f"{what}: {relpath!r} leads out of the directory")
            resolved.pop()
            continue
        target = readlink("/".join([*resolved, part]))
        if target is None:
            resolved.append(part)
            continue
        followed += 1
        if followed > _MAX_LINKS:
            raise JobError(f"{what}: {relpath!r} goes through too many symbolic links (a loop?)")
        if target.startswith("/"):
            raise JobError(f"{what}: {relpath!r} goes through a symbolic link to the absolute path {target!r}")
        pending.extend(reversed([p for p in target.split("/") if p]))
    return "/".join(resolved)


def resolve_under(root: Path, relpath: str, what: str) -> str:
    """``relpath`` under ``root`` with links inside ``root`` resolved; refused if they lead out of it."""
    parts_of(relpath, what)  # absolute or '..': refused before looking at the disk

    def readlink(path: str) -> str | None:
        parts = path.split("/")
        try:
            fd = _open_dir(root, parts[:-1], what, relpath, False)
        except JobError:
            return None  # a missing directory: the path does not exist, which the caller reports
        try:
            return os.readlink(parts[-1], dir_fd=fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    return resolve_beneath(relpath, readlink, what) or "."


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes, entries) of the tree under ``root``, links counted but not followed."""
    total = entries = 0
    for directory, dirs, files in os.walk(root):
        entries += len(dirs) + len(files)
        total += sum(os.lstat(os.path.join(directory, name)).st_size for name in files)
    return total, entries
