"""Tarball safety: what safe_extract and the NFS root extraction refuse, and that nothing lands outside.

Every refused tarball is checked twice: the error is a JobError naming the
member, and the directory next to the target (standing for the rest of the
worker) is exactly as it was.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pipeline.actions.common.nfsroot import extract_rootfs, overlay_target
from pipeline.archive import safe_extract
from pipeline.errors import JobError


def member(name: str, data: bytes | None = b"data\n", **fields) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data or b"")
    return info, data


def symlink(name: str, target: str):
    return member(name, None, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str, mode: int = 0o644):
    return member(name, None, type=tarfile.LNKTYPE, linkname=target, mode=mode)


def directory(name: str):
    return member(name, None, type=tarfile.DIRTYPE, mode=0o755)


def make_tarball(path: Path, members, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.fixture
def place(tmp_path):
    """(target, outside): the job's directory and a neighbour holding a file that must stay untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    return tmp_path / "job" / "root", outside


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    found = {}
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(directory))] = (stat.st_mode, stat.st_nlink,
                                                   path.read_bytes() if path.is_file() else b"")
    return found


ESCAPES = {
    "dotdot": (lambda out: [member("etc/hostname"), member("../../outside/dotdot")],
               "leaves the target directory ('..')"),
    "dotdot-inside": (lambda out: [member("etc/../../outside/sneaky")], "leaves the target directory"),
    "absolute": (lambda out: [member(f"{out}/absolute")], "has an absolute path"),
    "symlink-out": (lambda out: [directory("etc"), symlink("etc/escape", "../../../outside")],
                    "points out of the target"),
    "through-symlink": (lambda out: [symlink("etc", str(out)), member("etc/passwd")],
                        "would be written through a symbolic link"),
    "through-relative-symlink": (lambda out: [symlink("up", "."), member("up/../x")], "leaves the target"),
    "hardlink-absolute": (lambda out: [hardlink("etc/shadow", f"{out}/victim")], "hard link"),
    "hardlink-dotdot": (lambda out: [hardlink("etc/shadow", "../outside/victim")], "hard link"),
    "block-device": (lambda out: [member("dev/sda", None, type=tarfile.BLKTYPE, devmajor=8, devminor=0)],
                     "is a device file"),
    "char-device": (lambda out: [member("dev/mem", None, type=tarfile.CHRTYPE, devmajor=1, devminor=1)],
                    "is a device file"),
}


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_safe_extract_refuses_members_that_escape(tmp_path, place, kind):
    target, outside = place
    members, message = ESCAPES[kind]
    tarball = make_tarball(tmp_path / f"{kind}.tar.gz", members(outside))
    before = snapshot(tmp_path / "outside")
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        safe_extract(tarball, target, "nfsrootfs")
    assert snapshot(tmp_path / "outside") == before
    assert list(target.rglob("*")) == []  # refused before anything is written


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_nfs_root_extraction_refuses_the_same(tmp_path, place, kind):
    target, outside = place
    members, message = ESCAPES[kind]
    tarball = make_tarball(tmp_path / f"{kind}.tar.bz2", members(outside), "w:bz2")
    before = snapshot(tmp_path / "outside")
    with pytest.raises(JobError):
        extract_rootfs(tarball, target)
    assert snapshot(tmp_path / "outside") == before


# Writing through a link of the same name and hard-linking through a linked
# directory: safe_extract lets both through (pipeline/archive.py), the NFS root
# extraction refuses them.
THROUGH_LINKS = {
    "file-over-symlink": (lambda out: [symlink("etc/x", f"{out}/victim"), member("etc/x", b"overwritten\n")],
                          "would be written through the link"),
    "directory-over-symlink": (lambda out: [symlink("etc", str(out)), directory("etc")],
                               "would be written through the link"),
    "hardlink-through-symlink": (lambda out: [symlink("etc", str(out)), hardlink("shadow", "etc/victim")],
                                 "goes through a symbolic link"),
}


@pytest.mark.parametrize("kind", list(THROUGH_LINKS))
def test_nfs_root_extraction_refuses_writing_through_links(tmp_path, place, kind):
    target, outside = place
    members, message = THROUGH_LINKS[kind]
    tarball = make_tarball(tmp_path / f"{kind}.tar.gz", members(outside))
    before = snapshot(tmp_path / "outside")
    with pytest.raises(JobError, match=message):
        extract_rootfs(tarball, target)
    assert snapshot(tmp_path / "outside") == before
    assert (outside / "victim").stat().st_nlink == 1


def test_safe_extract_refuses_a_file_over_a_symlink(tmp_path, place):
    target, outside = place
    tarball = make_tarball(tmp_path / "over.tar.gz", THROUGH_LINKS["file-over-symlink"][0](outside))
    with pytest.raises(JobError, match="would be written through the link"):
        safe_extract(tarball, target, "definition")
    assert (outside / "victim").read_text() == "untouched\n"


def test_safe_extract_refuses_a_hard_link_through_a_symlink(tmp_path, place):
    target, outside = place
    tarball = make_tarball(tmp_path / "hard.tar.gz", THROUGH_LINKS["hardlink-through-symlink"][0](outside))
    with pytest.raises(JobError, match="goes through a symbolic link"):
        safe_extract(tarball, target, "definition")
    assert (outside / "victim").stat().st_nlink == 1


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2")])
def test_a_root_filesystem_is_unpacked_with_its_links(tmp_path, mode, suffix):
    tarball = make_tarball(tmp_path / f"rootfs.{suffix}", [
        directory("bin"), member("bin/busybox", b"\x7fELF", mode=0o755), symlink("bin/sh", "busybox"),
        symlink("sbin", "bin"), symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        hardlink("bin/ash", "bin/busybox", mode=0o755), member("etc/hostname", b"board\n"),
    ], mode)
    target = tmp_path / "root"
    assert extract_rootfs(tarball, target) == 7
    assert (target / "bin/busybox").stat().st_mode & 0o777 == 0o755
    assert os.readlink(target / "bin/sh") == "busybox"
    assert os.readlink(target / "etc/localtime") == "/usr/share/zoneinfo/UTC"  # read on the board
    assert (target / "bin/ash").stat().st_ino == (target / "bin/busybox").stat().st_ino
    assert (target / "etc/hostname").read_text() == "board\n"
    assert safe_extract(tarball, tmp_path / "again", "nfsrootfs") == 7


def test_something_else_than_a_tarball_is_a_job_error(tmp_path):
    junk = tmp_path / "rootfs.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(JobError, match="nfsrootfs"):
        extract_rootfs(junk, tmp_path / "root")
    with pytest.raises(JobError, match="not a readable tarball"):
        safe_extract(junk, tmp_path / "root2", "nfsrootfs")


def test_the_overlay_is_not_written_through_a_link_of_the_root_filesystem(tmp_path, place):
    target, outside = place
    make_tarball(tmp_path / "rootfs.tar.gz", [symlink("lava-1", str(outside))])
    extract_rootfs(tmp_path / "rootfs.tar.gz", target)
    with pytest.raises(JobError, match="is a symbolic link in the root filesystem"):
        overlay_target(target, "/lava-1")
    make_tarball(tmp_path / "rootfs2.tar.gz", [directory("var"), symlink("var/lib", str(outside))])
    extract_rootfs(tmp_path / "rootfs2.tar.gz", tmp_path / "root2")
    with pytest.raises(JobError, match="symbolic link"):
        overlay_target(tmp_path / "root2", "/var/lib/lava-1")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    created = overlay_target(tmp_path / "root2", "/srv/lava-1")
    assert created == tmp_path / "root2" / "srv" / "lava-1" and created.is_dir()
