"""The dispatcher's overhead on a real QEMU job.

Measures, N times each, on the emulated x86_64 board:
  bare  - the bare QEMU command (same kernel + initramfs) started by hand,
          to the shell prompt, then the same five test commands typed in;
  ours  - the wall time of `lava-dispatch run` for the equivalent job
          (a process start, downloads over file://, overlay, boot, five
          lava-test-case results, finalize).
Prints the medians and the difference (our overhead). Target: under 0.5 s.
The guest's boot alone varies by a second or more under TCG, so it also
prints the overhead with each run's own QEMU boot (start to prompt, measured
in the same run) taken out: what the dispatcher adds around the boot.
For reference, LAVA 2023.01 takes 4.7 s for such a job whose bare boot is 2.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pexpect
import yaml

ROOT = Path(__file__).resolve().parent.parent
# No redirections: in a lava-test-case step they would swallow the test case's own signals.
COMMANDS = ["uname -a", "test -d /proc/self", "test -r /proc/meminfo", "ifconfig lo", "true"]
PROMPT = "root@lava-board:~# "


def images_dir() -> Path:
    out = subprocess.run(["bash", str(ROOT / "tests/boards/build-images.sh")], capture_output=True, text=True,
                         check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def bare_run(images: Path) -> tuple[float, float]:
    """(wall time, of which QEMU start to the shell prompt)."""
    argv = ["-machine", "accel=tcg", "-nographic", "-nodefaults", "-no-reboot", "-m", "256", "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-kernel", str(images / "x86_64/vmlinux"), "-append", "console=ttyS0 panic=-1 quiet",
            "-initrd", str(images / "x86_64/initrd.cpio.gz")]
    started = time.monotonic()
    child = pexpect.spawn("qemu-system-x86_64", argv, encoding="utf-8", timeout=60)
    child.delaybeforesend = None
    try:
        child.expect_exact(PROMPT)
        boot = time.monotonic() - started
        for index, command in enumerate(COMMANDS):
            child.sendline(f"{command}; echo DONE_{index}=$?END")
            child.expect(rf"DONE_{index}=\d+END")
        return time.monotonic() - started, boot
    finally:
        child.close(force=True)


def job_text(images: Path) -> str:
    steps = "".join(f"                - lava-test-case c{i} --shell {c}\n" for i, c in enumerate(COMMANDS))
    return textwrap.dedent(f"""\
        device_type: kvm
        job_name: overhead
        timeouts: {{job: {{minutes: 5}}, action: {{minutes: 1}}}}
        actions:
          - deploy:
              to: tmpfs
              os: oe
              images:
                kernel: {{url: 'file://{images}/x86_64/vmlinux',
                          image_arg: '-kernel {{kernel}} -append "console=ttyS0 panic=-1 quiet"'}}
                ramdisk: {{url: 'file://{images}/x86_64/initrd.cpio.gz', image_arg: '-initrd {{ramdisk}}',
                           format: cpio.newc, overlays: {{lava: true}}}}
          - boot: {{method: qemu, media: tmpfs}}
          - test:
              definitions:
                - from: inline
                  name: overhead
                  path: o.yaml
                  repository:
                    metadata: {{name: overhead}}
                    run:
                      steps:
        """) + steps


BOOT = "QEMU start to shell prompt (the guest's boot)"


def phases(output: Path, started_wall: float, ended_wall: float) -> dict[str, float]:
    """Where our run's time went, from its own log: start-up, deploy, boot, test, finalize."""
    records = yaml.safe_load((output / "output.yaml").read_text())

    def stamp(record: dict) -> float:
        return datetime.fromisoformat(record["dt"]).replace(tzinfo=UTC).timestamp()

    def at(prefix: str) -> float:
        return stamp(next(r for r in records if isinstance(r["msg"], str) and r["msg"].startswith(prefix)))

    first = stamp(records[0])
    spawned = at("QEMU command")
    # The first line sent to the board goes out the moment its prompt is matched.
    prompt = next(stamp(r) for r in records if r["lvl"] == "input" and stamp(r) >= spawned)
    return {BOOT: prompt - spawned,
            "start-up (python, imports, validation)": first - started_wall,
            "deploy": at("end: 1 ") - first,
            "boot action (QEMU boot, shell set-up)": at("end: 2 ") - at("end: 1 "),
            "test": at("end: 3 ") - at("end: 2 "),
            "finalize and exit": ended_wall - at("end: 3 ")}


def our_run(images: Path, workdir: Path, breakdown: list[dict[str, float]]) -> float:
    """Wall time of lava-dispatch run; its phases are appended to ``breakdown``."""
    job = workdir / "job.yaml"
    job.write_text(job_text(images))
    started_wall = time.time()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(job), "--device",
                             str(ROOT / "sample_jobs/devices/kvm01.yaml"), "--output-dir", str(workdir / "out"),
                             "--quiet"], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"lava-dispatch run failed:\n{result.stdout}\n{result.stderr}")
    cases = [r for r in yaml.safe_load((workdir / "out" / "results.yaml").read_text()) if r["suite"] != "lava"]
    if len(cases) != len(COMMANDS) or any(r["result"] != "pass" for r in cases):
        raise SystemExit(f"the job did not pass its {len(COMMANDS)} test cases: {cases}")
    breakdown.append(phases(workdir / "out", started_wall, time.time()))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    images = images_dir()
    # Measure the tool as installed: byte-compiled (an editable install is not).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pipeline", "tasks", "coordinator"], cwd=ROOT, check=True)
    bare, bare_boots, ours, breakdown = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.runs):  # interleaved, so machine noise hits both alike
            total, boot = bare_run(images)
            bare.append(total)
            bare_boots.append(boot)
            ours.append(our_run(images, Path(tmp), breakdown))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"runs: {args.runs} each, {os.cpu_count()} cores, QEMU TCG")
    print(f"bare QEMU boot to prompt + 5 commands: median {b:.2f} s  (min {min(bare):.2f}, max {max(bare):.2f})")
    print(f"lava-dispatch run, same job:           median {o:.2f} s  (min {min(ours):.2f}, max {max(ours):.2f})")
    print(f"overhead (ours - bare):                median {o - b:+.2f} s   target < 0.50 s")
    # Each pair ran back to back, so its difference cancels most of the machine's drift.
    pairs = statistics.median(x - y for x, y in zip(ours, bare))
    print(f"overhead, median of paired differences:       {pairs:+.2f} s")
    # The same guest boot varies by a second or more under TCG, which swamps a
    # sub-second difference; taking each run's own QEMU boot out leaves our work.
    ours_rest = [o - item[BOOT] for o, item in zip(ours, breakdown)]
    bare_rest = [t - bt for t, bt in zip(bare, bare_boots)]
    print(f"guest boot, QEMU start to prompt:      bare median {statistics.median(bare_boots):.2f} s, "
          f"ours {statistics.median(item[BOOT] for item in breakdown):.2f} s")
    print(f"overhead without the guest's boot:     median {statistics.median(ours_rest) - statistics.median(bare_rest):+.2f} s"
          f"   (ours {statistics.median(ours_rest):.2f} s, bare {statistics.median(bare_rest):.2f} s)")
    print("our run, median of each phase:")
    for phase in breakdown[0]:
        print(f"  {phase:40} {statistics.median(item[phase] for item in breakdown):.3f} s")


if __name__ == "__main__":
    main()
