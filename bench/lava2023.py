"""The same job on LAVA 2023.01 (Debian's lava-run) and on ``lava-dispatch run``: wall time, N runs each.

The job and device of tests/test_lava_2023.py (an x86_64 QEMU boot, then six
test cases); LAVA's dispatcher is Debian's package, unpacked as that test
does (tests/lava_2023.py). Runs are interleaved so that machine noise hits
both alike. Prints each side's median and the paired difference, and checks
that both gave the same test-case results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lava_2023 import fetch_lava_dispatcher, run_lava  # noqa: E402
from test_lava_2023 import DEVICE, case_key, job_text, lava_cases  # noqa: E402


def images() -> Path:
    out = subprocess.run(["bash", str(ROOT / "tests/boards/build-tuxrun-images.sh")], capture_output=True, text=True,
                         check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root, version = fetch_lava_dispatcher()
    lava_times, our_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        job, device, dispatcher = work / "job.yaml", work / "device.yaml", work / "dispatcher.yaml"
        job.write_text(job_text(images()))
        device.write_text(DEVICE)
        dispatcher.write_text("dispatcher_ip: 10.0.2.2\n")
        for index in range(args.runs):
            started = time.monotonic()
            lava = run_lava(root, job, device, dispatcher, work / f"lava{index}", f"{os.getpid()}{index}",
                            dict(os.environ), 1200)
            lava_times.append(time.monotonic() - started)
            started = time.monotonic()
            ours = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(job), "--device", str(device),
                                   "--output-dir", str(work / f"ours{index}"), "--quiet"], cwd=ROOT,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            our_times.append(time.monotonic() - started)
            theirs = sorted(lava_cases(lava.stderr), key=str)
            mine = sorted((case_key(r) for r in yaml.safe_load((work / f"ours{index}" / "results.yaml").read_text())
                           if r["suite"] != "lava"), key=str)
            if lava.returncode != 0 or ours.returncode != 0 or theirs != mine:
                raise SystemExit(f"run {index}: the results differ or a run failed\nLAVA: {theirs}\nours: {mine}")
    print(f"runs: {args.runs} each, {os.cpu_count()} cores, QEMU TCG; LAVA {version}")
    print(f"LAVA 2023.01 lava-run:  median {statistics.median(lava_times):.2f} s  "
          f"(min {min(lava_times):.2f}, max {max(lava_times):.2f})")
    print(f"lava-dispatch run:      median {statistics.median(our_times):.2f} s  "
          f"(min {min(our_times):.2f}, max {max(our_times):.2f})")
    print(f"ours - LAVA, median of paired differences: "
          f"{statistics.median(o - t for o, t in zip(our_times, lava_times)):+.2f} s")
    print(f"test-case results: the same in every run ({len(theirs)} cases)")


if __name__ == "__main__":
    main()
