"""The same job on the same device, on LAVA 2023.01 (Debian's lava-dispatcher) and on ``lava-dispatch run``:
the same test-case results (case, result, measurement, units, test set).

The board is the emulated x86_64 one (kernel and busybox initramfs from
tests/boards/build-tuxrun-images.sh); the test overlay reaches it as each
dispatcher sends it (LAVA: a qcow2 guest disk; ours: a raw tar drive), the
one device file saying both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from test_lava_run import environment, tuxrun_images  # noqa: F401 - the images fixture

pytest_plugins = ["lava_2023"]  # the session fixture lava_dispatcher

ROOT = Path(__file__).resolve().parent.parent

DEVICE = """\
device_type: qemu
hostname: qemu01
available_architectures: [x86_64]
constants:
  posix: {lava_test_sh_cmd: /bin/sh, lava_test_results_dir: /lava-%s, lava_test_shell_file: ~/.profile}
  shutdown-message: The system is going down for reboot NOW
  kernel-start-message: Linux version [0-9]
  default-shell-prompt: 'lava-test: # '
  spawn_maxread: '4092'
  failure_retry: 1
  boot_retry: null
actions:
  deploy:
    methods:
      image:  # LAVA: the qcow2 disk with the overlay
        parameters: {guest: {size: 64, interface: ide, driveid: lavatest}}
      tmpfs: {}
  boot:
    connections: {serial: null}
    methods:
      qemu:
        parameters:
          command: qemu-system-x86_64
          options:
          - -machine pc,accel=tcg
          - -nographic -nodefaults -no-reboot
          - -m 512
          - -chardev stdio,id=con0,signal=off -serial chardev:con0
          # Ours: the overlay as a raw tar drive the booted board unpacks.
          overlay_arg: -drive format=raw,if=virtio,readonly=on,file={overlay}
          overlay_device: /dev/vda
"""

STEPS = [
    "lava-test-case passes --shell true",
    "lava-test-case fails --shell false",
    "lava-test-case skipped --result skip",
    "lava-test-case measured --result pass --measurement 42.5 --units ms",
    "lava-test-set start second",
    "lava-test-case in-set --shell test -d /proc",
    "lava-test-set stop second",
    "lava-test-case unknown-result --result unknown",
]


def job_text(images: Path) -> str:
    steps = "".join(f"          - {step}\n" for step in STEPS)
    return textwrap.dedent(f"""\
        device_type: qemu
        job_name: same job on LAVA 2023.01 and ours
        priority: medium
        visibility: public
        context: {{arch: x86_64}}
        timeouts:
          job: {{minutes: 20}}
          action: {{minutes: 10}}
          connection: {{minutes: 2}}
        actions:
        - deploy:
            to: tmpfs
            os: oe
            images:
              kernel:
                url: file://{images}/x86_64/bzImage
                image_arg: '-kernel {{kernel}} -append "console=ttyS0 panic=-1"'
              ramdisk:
                url: file://{images}/x86_64/lava-initrd.cpio.gz
                image_arg: -initrd {{ramdisk}}
        - boot:
            method: qemu
            media: tmpfs
            timeout: {{minutes: 10}}
            prompts: ['root@lava-board:~# ']
        - test:
            timeout: {{minutes: 10}}
            definitions:
            - from: inline
              name: compare
              path: inline/compare.yaml
              repository:
                metadata:
                  format: Lava-Test Test Definition 1.0
                  name: compare
                  description: the same cases on both dispatchers
                run:
                  steps:
        """) + textwrap.indent(steps, "      ")


def case_key(entry: dict) -> tuple:
    """What a test case's result says, as both dispatchers write it (LAVA's measurement is a string)."""
    measurement = entry.get("measurement")
    suite = entry.get("suite", entry.get("definition"))
    return (suite, entry["case"], entry["result"], None if measurement in (None, "") else float(measurement),
            entry.get("units") or None, entry.get("set"))


def lava_cases(stderr: str) -> list[tuple]:
    records = [yaml.safe_load(line) for line in stderr.splitlines() if line.startswith("{")]
    return [case_key(r["msg"]) for r in records if r and r.get("lvl") == "results" and r["msg"]["definition"] != "lava"]


@pytest.mark.qemu
def test_lava_2023_and_ours_give_the_same_results(lava_dispatcher, tuxrun_images, tmp_path, no_leftovers):
    root, version = lava_dispatcher
    assert version.startswith("2023.01"), version
    job, device, dispatcher = tmp_path / "job.yaml", tmp_path / "device.yaml", tmp_path / "dispatcher.yaml"
    job.write_text(job_text(tuxrun_images))
    device.write_text(DEVICE)
    dispatcher.write_text("dispatcher_ip: 10.0.2.2\n")
    env = environment(tmp_path)
    job_id = f"{os.getpid()}{len(str(tmp_path))}"
    lava = __import__("lava_2023").run_lava(root, job, device, dispatcher, tmp_path / "lava", job_id, env, 1200)
    assert lava.returncode == 0, lava.stderr[-6000:]
    theirs = lava_cases(lava.stderr)

    ours_run = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(job), "--device", str(device),
                               "--output-dir", str(tmp_path / "ours"), "--quiet"], capture_output=True, text=True,
                              timeout=1200, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})
    assert ours_run.returncode == 0, ours_run.stdout + ours_run.stderr
    ours = [case_key(r) for r in yaml.safe_load((tmp_path / "ours" / "results.yaml").read_text())
            if r["suite"] != "lava"]
    assert len(theirs) == len(STEPS) - 2, theirs  # every case, and nothing else
    assert {r for r in theirs if r[2] == "fail"} and {r for r in theirs if r[3] is not None}
    assert sorted(ours, key=str) == sorted(theirs, key=str)
