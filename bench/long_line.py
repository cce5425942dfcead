"""A board that prints one long line without a newline: how long the dispatcher takes to get it through.

Runs `lava-dispatch run` on the local-shell board with a test step that
prints N bytes without a newline (`head -c N /dev/zero | tr '\\0' a`)
followed by a test case, for N = 256 KB, 1 MB and 4 MB, and prints the time
of the test action (from the job's own log) minus that of the same job with
an empty line. Linear handling shows as a constant MB/s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SIZES = [256 * 1024, 1024 * 1024, 4 * 1024 * 1024]


def job_text(size: int) -> str:
    return textwrap.dedent(f"""\
        device_type: local-shell
        job_name: long-line-{size}
        timeouts: {{job: {{minutes: 10}}, action: {{minutes: 9}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - from: inline
                  name: long-line
                  path: l.yaml
                  repository:
                    metadata: {{name: long-line}}
                    run:
                      steps:
                        - "head -c {size} /dev/zero | tr '\\\\0' a"
                        - lava-test-case after-the-line --result pass
        """)


def test_action_seconds(size: int, workdir: Path, timeout: float) -> float | None:
    """Seconds the test action took, from its start and end lines in output.yaml; None on timeout."""
    job = workdir / f"job-{size}.yaml"
    job.write_text(job_text(size))
    out = workdir / f"out-{size}"
    try:
        result = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(job), "--device",
                                 str(ROOT / "sample_jobs/devices/local01.yaml"), "--output-dir", str(out), "--quiet"],
                                cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        raise SystemExit(f"the job for {size} bytes failed:\n{result.stdout}\n{result.stderr[-2000:]}")
    results = yaml.safe_load((out / "results.yaml").read_text())
    if not any(r["case"] == "after-the-line" and r["result"] == "pass" for r in results):
        raise SystemExit(f"{size} bytes: the test case after the line is missing: {results}")
    records = yaml.safe_load((out / "output.yaml").read_text())
    printed = sum(r["msg"].count("a") for r in records if r["lvl"] == "target")
    if printed < size:
        raise SystemExit(f"{size} bytes: output.yaml holds only {printed} of them")

    def stamp(prefix: str) -> float:
        record = next(r for r in records if isinstance(r["msg"], str) and r["msg"].startswith(prefix))
        return datetime.fromisoformat(record["dt"]).timestamp()

    return stamp("end: 2 ") - stamp("start: 2 ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per size (the median is printed)")
    parser.add_argument("--timeout", type=float, default=120, help="give up on a size after this many seconds")
    parser.add_argument("--sizes", type=lambda text: [int(v) for v in text.split(",")], default=SIZES,
                        help="comma-separated line lengths in bytes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-long-line-") as tmp:
        workdir = Path(tmp)
        base = sorted(test_action_seconds(0, workdir, args.timeout) or 0.0 for _ in range(args.runs))
        baseline = base[len(base) // 2]
        print(f"test action with an empty line: {baseline * 1000:.0f} ms (subtracted below)")
        print(f"{'line':>8}  {'extra time':>10}  {'throughput':>12}")
        for size in args.sizes:
            samples = [test_action_seconds(size, workdir, args.timeout) for _ in range(args.runs)]
            if any(s is None for s in samples):
                print(f"{size // 1024:>6}KB  {'timeout':>10}  (over {args.timeout:g} s)")
                continue
            samples.sort()
            extra = max(samples[len(samples) // 2] - baseline, 1e-6)
            print(f"{size // 1024:>6}KB  {extra * 1000:>8.0f}ms  {size / extra / 1e6:>8.1f} MB/s")


if __name__ == "__main__":
    main()
