"""The schema modules (pipeline/schema*.py) are mypy --strict clean and, with their tests, ruff clean.

pyproject.toml holds the settings (``make lint`` runs the same tools on
every package); mypy's cache is kept in pytest's cache directory.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

SCHEMA_MODULES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "pipeline").glob("schema*.py"))
SCHEMA_TESTS = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("*schema*.py"))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_schema_modules_are_mypy_strict_clean(request):
    pytest.importorskip("mypy")
    cache = request.config.cache.mkdir("mypy")
    result = run("mypy", "--strict", "--cache-dir", str(cache), *SCHEMA_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_modules_and_tests_are_ruff_clean():
    pytest.importorskip("ruff")
    result = run("ruff", "check", "--no-cache", "--output-format", "concise", *SCHEMA_MODULES, *SCHEMA_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
