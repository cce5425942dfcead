"""Safe extraction of tarballs from jobs (test definitions, NFS root filesystems, the overlay).

A member that would escape the target (an absolute path, ``..``, a
relative link pointing out, a member written through a link) or a device
file is refused with a JobError before anything is written. So are
archives past their limits (entries, unpacked bytes: pipeline/limits.py):
the tarball is read as a stream through the bounded decompressor twice,
first to check every member, then to extract them.

Links follow one of two policies. In a root filesystem absolute symbolic
links and hard links are kept: they name paths on the board
(``/etc/localtime -> /usr/share/zoneinfo/UTC``), and since no member may
be written through a link, extraction never follows one. In test
definitions (``links_inside``) every symbolic link must resolve inside
the target, and hard links are refused.

Extraction also refuses to write through a link that is already on disk
under the target: the overlay is unpacked into an NFS root that the job's
own tarball made.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from pipeline import limits
from pipeline.decompress import BoundedReader, sniff
from pipeline.errors import CorruptData, JobError
from pipeline.limits import TAR_METADATA_BYTES, Bound
from pipeline.safefs import resolve_beneath

SPARSE_ENTRIES = 65536  # holes in one sparse file: real ones have a handful


class Entry(NamedTuple):
    """What the checks need of a member (a TarInfo weighs ten times more, and a root has many)."""

    name: str
    type: bytes
    linkname: str
    size: int


class _Refused(Exception):
    """A member tarfile would otherwise read into memory whole, too big to be real."""


# tarfile's own internals, which _BoundedTarInfo extends (typeshed does not describe them).
_TARFILE: Any = tarfile


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads long names, pax headers and sparse maps into memory whole: bound them first."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > TAR_METADATA_BYTES:
            raise _Refused(f"a metadata header of {self.size} bytes")
        if self.type == tarfile.GNUTYPE_SPARSE:
            return self._proc_sparse_bounded(archive)
        member: tarfile.TarInfo = _TARFILE.TarInfo._proc_member(self, archive)
        return member

    def _proc_sparse_bounded(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        # As tarfile's _proc_sparse, with the extension headers counted.
        slots: Any = self  # _sparse_structs: a slot of tarfile's own, unknown to typeshed
        structs, isextended, origsize = slots._sparse_structs
        del slots._sparse_structs
        while isextended:
            if len(structs) > SPARSE_ENTRIES:
                raise _Refused("a sparse file with too many holes")
            buf = archive.fileobj.read(tarfile.BLOCKSIZE)
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = _TARFILE.nti(buf[pos:pos + 12]), _TARFILE.nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = len(buf) == tarfile.BLOCKSIZE and bool(buf[504])
        self.sparse = structs
        self.offset_data = archive.fileobj.tell()
        archive.offset = self.offset_data + _TARFILE.TarInfo._block(self, self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str], archive: tarfile.TarFile) -> None:
        # As tarfile's, with the map's length bounded before it is built.
        buf = archive.fileobj.read(tarfile.BLOCKSIZE)
        fields, _, buf = buf.partition(b"\n")
        if not fields.isdigit() or int(fields) > SPARSE_ENTRIES:
            raise _Refused("a sparse file map that is too long or unreadable")
        sparse: list[int] = []
        while len(sparse) < int(fields) * 2:
            if b"\n" not in buf:
                more = archive.fileobj.read(tarfile.BLOCKSIZE)
                if not more or len(buf) > 64:
                    raise _Refused("an unreadable sparse file map")
                buf += more
            number, _, buf = buf.partition(b"\n")
            sparse.append(int(number))
        next.offset_data = archive.fileobj.tell()
        # typeshed says bytes; tarfile keeps (offset, size) pairs.
        next.sparse = list(zip(sparse[::2], sparse[1::2], strict=True))  # type: ignore[assignment]


@contextlib.contextmanager
def _stream(tarball: Path, what: str, size: Bound) -> Iterator[tarfile.TarFile]:
    """The tarball as a tarfile stream, read through the bounded decompressor."""
    with BoundedReader(tarball, sniff(tarball), size, what) as reader, \
            tarfile.open(fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo) as archive:
        yield archive


def scan(tarball: Path, what: str, size: Bound, files: Bound) -> list[Entry]:
    """Every member's entry, read as a stream; a JobError once the archive passes a limit."""
    entries: list[Entry] = []
    total = 0
    with _stream(tarball, what, size) as archive:
        for member in archive:
            entries.append(Entry(member.name, member.type, member.linkname, member.size))
            files.check(len(entries), what, "holds", "entries")
            if member.isreg():
                total += member.size
                size.check(total, what, "holds")
    return entries


def check_members(entries: list[Entry], what: str, links_inside: bool = False) -> None:
    """A JobError naming the first member that could write outside the target."""
    links = {PurePosixPath(e.name): e.linkname for e in entries if e.type == tarfile.SYMTYPE}
    seen: set[PurePosixPath] = set()
    for entry in entries:
        name = entry.name
        path = PurePosixPath(name)
        if path in links and path in seen:
            raise JobError(f"{what}: member {name!r} appears twice and one is a symbolic link: it would be "
                           "written through the link")
        seen.add(path)
        if entry.type not in tarfile.REGULAR_TYPES + (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE):
            raise JobError(f"{what}: member {name!r} is a device file or another special file")
        if path.is_absolute():
            raise JobError(f"{what}: member {name!r} has an absolute path")
        if ".." in path.parts:
            raise JobError(f"{what}: member {name!r} leaves the target directory ('..')")
        if any(parent in links for parent in path.parents):
            raise JobError(f"{what}: member {name!r} would be written through a symbolic link")
        target = PurePosixPath(entry.linkname)
        if entry.type == tarfile.SYMTYPE:
            if links_inside:
                if target.is_absolute():
                    raise JobError(f"{what}: link {name!r} -> {entry.linkname!r} is an absolute symbolic link: "
                                   "a test definition's links must stay inside it")
                try:
                    resolve_beneath(name, lambda p: links.get(PurePosixPath(p)), what)
                except JobError:
                    raise JobError(f"{what}: link {name!r} -> {entry.linkname!r} points out of the target") from None
            elif not target.is_absolute() and _escapes(path.parent / target):
                raise JobError(f"{what}: link {name!r} -> {entry.linkname!r} points out of the target")
        elif entry.type == tarfile.LNKTYPE:
            if links_inside:
                raise JobError(f"{what}: member {name!r} is a hard link: test definitions may not hold any")
            if target.is_absolute() or _escapes(target):
                raise JobError(f"{what}: hard link {name!r} -> {entry.linkname!r} points out of the target")
            if target in links or any(parent in links for parent in target.parents):
                raise JobError(f"{what}: hard link {name!r} -> {entry.linkname!r} goes through a symbolic link")


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


class _OnDisk:
    """A tarfile extraction filter: the member is the one checked, and no link on disk is on its way."""

    def __init__(self, target: Path, entries: list[Entry], what: str):
        self.target, self.entries, self.what = str(target), iter(entries), what
        self.directories: set[str] = set()  # checked already: real directories under the target

    def __call__(self, member: tarfile.TarInfo, _path: str) -> tarfile.TarInfo:
        expected = next(self.entries, None)
        if expected != Entry(member.name, member.type, member.linkname, member.size):
            raise JobError(f"{self.what}: the tarball changed while it was unpacked")
        parts = PurePosixPath(member.name).parts
        for depth in range(1, len(parts) + 1):
            relative = "/".join(parts[:depth])
            if relative in self.directories:
                continue
            try:
                mode = os.lstat(os.path.join(self.target, relative)).st_mode
            except FileNotFoundError:
                break  # nothing below it exists yet
            if stat.S_ISLNK(mode) and (depth < len(parts) or member.type != tarfile.SYMTYPE):
                raise JobError(f"{self.what}: member {member.name!r} would be written through the symbolic "
                               f"link {relative!r} already in the target")
            if stat.S_ISDIR(mode) and depth < len(parts):
                self.directories.add(relative)
        return member


def safe_extract(tarball: Path, target: Path, what: str, *, size: Bound | None = None, files: Bound | None = None,
                 links_inside: bool = False) -> int:
    """Extract a gz, bz2, xz or plain tarball into ``target``; return the member count.

    ``size`` bounds the unpacked bytes (default LAVA_DISPATCH_MAX_IMAGE_BYTES), ``files`` the
    entries (default LAVA_DISPATCH_MAX_ROOTFS_FILES); ``links_inside`` is the test definitions' policy.
    """
    size = size or limits.image_bytes()
    files = files or limits.rootfs_files()
    try:
        entries = scan(tarball, what, size, files)
        check_members(entries, what, links_inside)
        target.mkdir(parents=True, exist_ok=True)
        with _stream(tarball, what, size) as archive:
            # Every member passed the checks above, so the filter keeps what a root
            # filesystem needs (absolute links, permissions) as tarfile's fully_trusted does.
            keep, owners = _OnDisk(target, entries, what), os.getuid() == 0
            if hasattr(tarfile, "data_filter"):
                archive.extractall(target, filter=keep, numeric_owner=owners)
            else:  # Python before 3.11.4 (Debian 12's 3.11.2) has no filters: the same check per member
                for member in archive:
                    archive.extract(keep(member, str(target)), target, numeric_owner=owners)
    except CorruptData as exc:
        raise JobError(f"{what}: not a readable tarball: {exc.detail}") from None
    except _Refused as exc:
        raise JobError(f"{what}: the tarball holds {exc}") from None
    except tarfile.TarError as exc:
        raise JobError(f"{what}: not a readable tarball: {exc}") from None
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise JobError(f"{what}: the tarball cannot be unpacked: {exc}") from None
    return len(entries)
