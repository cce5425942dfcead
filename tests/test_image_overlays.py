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


# ---------------------------------------------------------------- a real boot (QEMU)

BOOT_JOB = """\
job_name: ext4 image with a modules overlay
device_type: kvm
timeouts: {{job: {{minutes: 8}}, action: {{minutes: 3}}}}
actions:
- deploy:
    to: tmpfs
    os: oe
    images:
      kernel:
        url: file://{images}/x86_64/vmlinux
        image_arg: -kernel {{kernel}} -append "console=ttyS0 panic=-1 quiet"
      ramdisk:
        url: file://{images}/x86_64/initrd.cpio.gz
        image_arg: -initrd {{ramdisk}}
        format: cpio.newc
        overlays: {{lava: true}}
      rootfs:
        url: file://{rootfs}
        image_arg: -drive format=ext4,if=virtio,file={{rootfs}}
        format: ext4
        overlays:
          modules: {{url: 'file://{modules}', compression: gz, format: tar, path: /lib/modules}}
- boot: {{method: qemu, media: tmpfs, prompts: ['root@lava-board:~# ']}}
- test:
    definitions:
    - from: inline
      name: overlay
      path: inline/overlay.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: overlay}}
        run:
          steps:
          - mkdir -p /mnt && mount -t ext4 /dev/vda /mnt
          - "lava-test-case module-in-image --shell grep -q 'module a' /mnt/lib/modules/6.1/a.ko"
          - "lava-test-case image-kept --shell grep -q base /mnt/etc/base"
"""


@needs_e2fsprogs
@pytest.mark.qemu
def test_the_booted_board_finds_the_overlay_in_its_ext4_disk(tmp_path: Path, images: Path) -> None:
    import tarfile

    from conftest import device_path, run_job

    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "base").write_text("base\n")
    rootfs = ext4_image(tmp_path / "rootfs.ext4", base)
    original = rootfs.read_bytes()
    module = tmp_path / "a.ko"
    module.write_text("module a\n")
    modules = tmp_path / "modules.tar.gz"
    with tarfile.open(modules, "w:gz") as archive:
        archive.add(module, "6.1/a.ko")
    run = run_job(tmp_path, BOOT_JOB.format(images=images, rootfs=rootfs, modules=modules), device_path("kvm"))
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.case("module-in-image")["result"] == "pass" and run.case("image-kept")["result"] == "pass"
    assert rootfs.read_bytes() == original  # the job's copy was changed, never the file its URL names
    assert any("format=raw,if=virtio" in m for m in run.messages() if m.startswith("QEMU command: "))
