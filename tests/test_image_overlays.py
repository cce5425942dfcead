"""Files written into an ext4 image (``images.X.overlays``, LAVA's append-overlays), with the real debugfs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import ext4_overlay
from pipeline.actions.boot.qemu_args import check_image_arg, substitute
from pipeline.errors import JobError, ProblemList
from pipeline.parser import parse_job

needs_e2fsprogs = pytest.mark.skipif(not (shutil.which("debugfs") or Path("/usr/sbin/debugfs").exists())
                                     or not (shutil.which("mke2fs") or Path("/usr/sbin/mke2fs").exists()),
                                     reason="e2fsprogs (debugfs, mke2fs) is not installed")
SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"


def ext4_image(path: Path, tree: Path) -> Path:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(path), "8M"], check=True,
                   env={"PATH": SBIN})
    return path


def image_cat(image: Path, inside: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {inside}", str(image)], capture_output=True, text=True,
                          env={"PATH": SBIN}, check=True).stdout


def image_ls(image: Path, inside: str) -> str:
    return subprocess.run(["debugfs", "-R", f"ls -l {inside}", str(image)], capture_output=True, text=True,
                          env={"PATH": SBIN}, check=True).stdout


@needs_e2fsprogs
def test_a_tree_goes_into_the_image_keeping_what_is_there_and_replacing_files(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "lib" / "modules").mkdir(parents=True)
    (base / "etc").mkdir()
    (base / "etc" / "hostname").write_text("old\n")
    image = ext4_image(tmp_path / "rootfs.ext4", base)
    overlay = tmp_path / "overlay"
    (overlay / "lib" / "modules" / "6.1" / "kernel").mkdir(parents=True)
    (overlay / "lib" / "modules" / "6.1" / "kernel" / "a.ko").write_text("module a\n")
    (overlay / "lib" / "modules" / "6.1" / "latest").symlink_to("kernel")
    (overlay / "etc").mkdir()
    (overlay / "etc" / "hostname").write_text("new\n")
    ext4_overlay.run_script(image, ext4_overlay.tree_script(overlay, "/"), timeout=30)
    assert image_cat(image, "/lib/modules/6.1/kernel/a.ko") == "module a\n"
    assert image_cat(image, "/etc/hostname") == "new\n"
    listing = image_ls(image, "/lib/modules/6.1")
    assert "latest" in listing and "120777" in listing  # the link stays a link
    ext4_overlay.run_script(image, ext4_overlay.parents("/opt/x/file") +
                            ext4_overlay.file_script(overlay / "etc" / "hostname", "/opt/x/file"), timeout=30)
    assert image_cat(image, "/opt/x/file") == "new\n"


@needs_e2fsprogs
def test_an_error_of_debugfs_fails_the_job_naming_the_image(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    image = ext4_image(tmp_path / "rootfs.ext4", base)
    with pytest.raises(JobError, match="append-overlays: writing into rootfs.ext4 failed"):
        ext4_overlay.run_script(image, ['write "/nonexistent-local-file" "/x"'], timeout=30)
    with pytest.raises(JobError, match="a quote"):
        ext4_overlay.file_script(tmp_path, '/a"b')


JOB = """\
job_name: overlays
device_type: qemu
timeouts: {{job: {{minutes: 5}}}}
actions:
- deploy:
    to: tmpfs
    images:
      rootfs:
        url: http://example.com/rootfs.ext4.xz
        compression: xz
        image_arg: -drive format=ext4,file={{rootfs}}
        format: {format}
        overlays:
          modules: {{url: 'http://example.com/modules.tar.gz', compression: gz, format: tar, path: {path}}}
"""


def test_overlays_are_checked_when_the_job_is_validated() -> None:
    job = parse_job(JOB.format(format="ext4", path="/"))
    assert job.urls()[-1] == ("actions[0].deploy.images.rootfs.overlays.modules.url",
                              "http://example.com/modules.tar.gz")
    for fmt, path, message in [
        ("ext4", "lib/x", "actions[0].deploy.images.rootfs.overlays.modules.path: 'lib/x' must be an absolute path"),
        ("ext4", "/a/../b", "must be an absolute path without '..'"),
        ("raw", "/", "actions[0].deploy.images.rootfs.overlays.modules: files are inserted into ext4 images only"),
    ]:
        with pytest.raises(ProblemList) as caught:
            parse_job(JOB.format(format=fmt, path=path))
        assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_format_ext4_is_given_to_qemu_as_raw(tmp_path: Path) -> None:
    assert check_image_arg("-drive format=ext4,file={rootfs}", {"rootfs"}) == []
    argv, disks = substitute("-drive format=ext4,if=virtio,file={rootfs}", {"rootfs": tmp_path / "r.ext4"})
    assert argv == ["-drive", f"format=raw,if=virtio,file={tmp_path / 'r.ext4'}"] and disks[0][1] == "raw"
