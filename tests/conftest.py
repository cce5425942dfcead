"""Shared fixtures: paths, the CLI in-process, sample devices."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_jobs"
DEVICES = SAMPLES / "devices"
DEVICE_FOR_TYPE = {"kvm": "kvm01", "local-shell": "local01", "beaglebone-black": "bbb01", "panda": "panda01",
                   "arm64-uboot": "arm64-uboot01", "arm-uboot": "arm-uboot01"}


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    from tasks.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


def device_path(device_type: str) -> Path:
    return DEVICES / f"{DEVICE_FOR_TYPE[device_type]}.yaml"


@pytest.fixture
def cli():
    return run_cli


def pytest_configure(config):
    sys.path.insert(0, str(ROOT))
