"""deploy to nfs + boot method qemu-nfs: LAVA's names, and the kernel command line QEMU is given."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

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
