"""The pipeline of every sample job on its sample device, pinned.

A refactoring of strategies, actions or timeouts must not change what
``lava-dispatch validate JOB --device DEV`` describes: names, levels,
descriptions, summaries and effective timeouts. After an intended change,
regenerate with ``UPDATE_GOLDEN=1 python -m pytest tests/test_pipeline_golden.py``
and review the diff of tests/golden/pipelines/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import device_path, run_cli
from test_validation import device_types_of, sample_jobs

GOLDEN = Path(__file__).parent / "golden" / "pipelines"


def cases() -> list[tuple[Path, str]]:
    return [(job, device_type) for job in sample_jobs() for device_type in device_types_of(job)]


@pytest.mark.parametrize(("job", "device_type"), cases(), ids=lambda v: getattr(v, "stem", v))
def test_pipeline_description_is_unchanged(job: Path, device_type: str) -> None:
    result = run_cli("validate", str(job), "--device", str(device_path(device_type)))
    assert result.code == 0, result.err
    described = yaml.safe_load(result.out)
    golden = GOLDEN / f"{job.stem}--{device_type}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(yaml.safe_dump(described, sort_keys=False))
    assert golden.exists(), f"no golden description {golden.name}: run with UPDATE_GOLDEN=1"
    assert described == yaml.safe_load(golden.read_text())
