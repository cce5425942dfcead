"""Validation speed: parse + validate + build the pipeline of every sample job.

Prints the median and p95 time per job and jobs/second. Target: median
under 5 ms per job.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from pipeline.builder import build_pipeline  # noqa: E402
from pipeline.device import load_device  # noqa: E402
from pipeline.parser import parse_job  # noqa: E402

DEVICE_FOR_TYPE = {"kvm": "kvm01", "local-shell": "local01", "beaglebone-black": "bbb01", "panda": "panda01",
                   "arm64-uboot": "arm64-uboot01", "arm-uboot": "arm-uboot01"}


def jobs() -> list[tuple[str, str, object, str | None]]:
    out = []
    for path in sorted((ROOT / "sample_jobs").glob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text)
        if data.get("device_type"):
            pairs = [(data["device_type"], None)]
        else:
            pairs = [(role["device_type"], name) for name, role in data["protocols"]["lava-multinode"]["roles"].items()]
        for device_type, role in pairs:
            device = load_device(ROOT / "sample_jobs" / "devices" / f"{DEVICE_FOR_TYPE[device_type]}.yaml")
            out.append((path.name, text, device, role))
    return out


def main(rounds: int = 200) -> None:
    cases = jobs()
    for _, text, device, role in cases:  # warm up imports and caches
        build_pipeline(parse_job(text), device, role)
    samples = []
    for _ in range(rounds):
        for _, text, device, role in cases:
            started = time.perf_counter()
            build_pipeline(parse_job(text), device, role)
            samples.append(time.perf_counter() - started)
    samples.sort()
    median = statistics.median(samples)
    p95 = samples[int(len(samples) * 0.95)]
    print(f"sample jobs: {len(cases)} (job x role), rounds: {rounds}, samples: {len(samples)}")
    print(f"parse + validate + build pipeline: median {median * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms per job")
    print(f"throughput: {1 / statistics.mean(samples):.0f} jobs/second (one core)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
