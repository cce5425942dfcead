"""deploy to nfs + boot method qemu-nfs: LAVA's names, and the kernel command line QEMU is given."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import DEVICES, run_job
from test_uboot_boards import nfs_tree  # noqa: F401 - the fixture: one NFS tree, nfs-ganesha stopped at the end

from pipeline.actions.boot.qemu_nfs import CallQemuNfsAction
from pipeline.builder import build_pipeline
from pipeline.deployment import Deployment
from pipeline.device import Device
from pipeline.errors import ProblemList
from pipeline.parser import parse_job

JOB = """\
job_name: qemu nfs
device_type: qemu
timeouts: {job: {minutes: 5}}
actions:
- deploy:
    to: nfs
    os: debian
    images:
      nfsrootfs: {url: 'http://example.com/root.tar.gz', compression: gz, image_arg: 'nfsroot=x'}
      kernel: {url: 'http://example.com/Image', image_arg: '-kernel {kernel}'}
- boot: {method: qemu-nfs, prompts: ['# ']}
- test:
    definitions:
    - {from: inline, name: smoke, path: inline/smoke.yaml,
       repository: {metadata: {format: Lava-Test Test Definition 1.0, name: smoke}, run: {steps: [true]}}}
"""


def device(export: Path) -> Device:
    return Device.model_validate({
        "device_type": "qemu",
        "parameters": {"dispatcher_ip": "10.0.2.2"},
        "actions": {"deploy": {"methods": {"nfs": {"parameters": {"nfs_root": str(export)}}}},
                    "boot": {"methods": {"qemu-nfs": {"parameters": {
                        "command": "qemu-system-aarch64", "options": ["-nographic", "-m 512"],
                        "append": {"console": "ttyAMA0", "root": "/dev/nfs",
                                   "nfsrootargs": "nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard",
                                   "ipargs": "ip=dhcp"}}}}}},
    })


def test_it_builds_with_lavas_names(tmp_path: Path) -> None:
    built = build_pipeline(parse_job(JOB), device(tmp_path))
    deploy, boot = built.pipeline.actions[:2]
    assert deploy.name == "deploy-qemu-nfs"
    assert [a.name for a in deploy.pipeline.actions] == ["download-retry", "download-retry", "qemu-nfs-deploy",
                                                         "lava-overlay", "apply-overlay-tftp", "deploy-device-env"]
    assert boot.name == "boot-image-retry" and boot.pipeline.actions[0].pipeline.actions[0].name == "execute-qemu"


def test_qemu_gets_the_kernel_and_the_nfs_root_on_its_command_line_not_the_nfsrootfs_image_arg(tmp_path) -> None:
    dev = device(tmp_path)
    root = tmp_path / "board" / "job-1"
    root.mkdir(parents=True)
    deployment = Deployment("nfs", "actions[0].deploy", image_args={"nfsrootfs": "nfsroot=x", "kernel": "-kernel {kernel}"},
                            images={"nfsrootfs": tmp_path / "root.tar.gz", "kernel": tmp_path / "Image"}, nfs_root=root)
    ctx = SimpleNamespace(device=dev, deployed=lambda: deployment)
    argv = CallQemuNfsAction().command(ctx)  # type: ignore[arg-type]  # the two things it reads
    assert argv == ["qemu-system-aarch64", "-nographic", "-m", "512", "-kernel", str(tmp_path / "Image"), "-append",
                    f"console=ttyAMA0 root=/dev/nfs nfsroot=10.0.2.2:{root},tcp,hard rw ip=dhcp"]


def test_qemu_nfs_needs_a_deploy_to_nfs_and_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(ProblemList) as caught:
        parse_job(JOB.replace("      kernel: {url: 'http://example.com/Image', image_arg: '-kernel {kernel}'}\n", ""))
    assert caught.value.problems == ["actions[0].deploy.images.kernel: required but missing (qemu-nfs boots a kernel)"]


# ---------------------------------------------------------------- a real boot (QEMU, nfs-ganesha)

BOOT_JOB = """\
job_name: qemu-nfs on the emulated x86_64 board
device_type: kvm
timeouts: {{job: {{minutes: 10}}, action: {{minutes: 4}}}}
actions:
- deploy:
    to: nfs
    os: oe
    images:
      nfsrootfs: {{url: 'file://{images}/x86_64/rootfs.tar.gz', compression: gz,
                  image_arg: 'nfsroot={{NFS_SERVER_IP}}:{{nfsrootfs}},tcp,hard'}}
      kernel: {{url: 'file://{images}/x86_64/vmlinux', image_arg: '-kernel {{kernel}}'}}
      initrd: {{url: 'file://{images}/x86_64/initrd.cpio.gz', image_arg: '-initrd {{initrd}}'}}
- boot: {{method: qemu-nfs, prompts: ['root@lava-board:~# ']}}
- test:
    definitions:
    - from: inline
      name: nfs-root
      path: inline/nfs-root.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: nfs-root}}
        run:
          steps:
          - "lava-test-case root-is-nfs --shell grep -q ' / nfs4 ' /proc/mounts"
          - "lava-test-case root-writable --shell touch /written-by-the-board"
"""


@pytest.fixture
def nfs_device(tmp_path: Path, nfs_tree: Path) -> Path:
    """sample kvm01 with a qemu-nfs method and an NFS export the dispatcher's nfs-ganesha serves."""
    data = yaml.safe_load((DEVICES / "kvm01.yaml").read_text())
    qemu = data["actions"]["boot"]["methods"]["qemu"]["parameters"]
    data["parameters"]["nfs_server_ip"] = "10.0.2.2"
    data["actions"]["deploy"]["methods"]["nfs"] = {"parameters": {"nfs_root": str(nfs_tree), "nfs_server": "ganesha"}}
    data["actions"]["boot"]["methods"]["qemu-nfs"] = {"parameters": {
        "command": qemu["command"], "options": qemu["options"],
        "append": {"console": "ttyS0", "root": "/dev/nfs", "nfsrootargs": "nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard",
                   "ipargs": "panic=-1"}}}
    path = tmp_path / "kvm-nfs01.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.qemu
def test_qemu_boots_the_kernel_with_its_root_on_nfs_and_runs_the_tests_there(tmp_path, images, nfs_device,
                                                                              nfs_tree) -> None:
    run = run_job(tmp_path, BOOT_JOB.format(images=images), nfs_device, timeout=600)
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.case("root-is-nfs")["result"] == "pass" and run.case("root-writable")["result"] == "pass"
    messages = run.messages()
    (root,) = [m.split(" entries in ")[1] for m in messages if m.startswith("nfsrootfs: ")]
    assert root.startswith(f"{nfs_tree}/kvm-nfs01/")
    assert any(f"root=/dev/nfs nfsroot=10.0.2.2:{root},tcp,hard rw panic=-1" in m for m in messages
               if m.startswith("QEMU command: ")), messages
    assert not (nfs_tree / "kvm-nfs01").exists() or not list((nfs_tree / "kvm-nfs01").iterdir())  # removed
