"""The soak (bench/soak.py) as a test: real workers, killed workers, Redis restarts, cancels, hanging tests.

Two minutes in CI (``CI=true``), one otherwise. The invariants are read from
its last line and its event counts, never its timings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.lab


def test_soak_invariants_hold():
    minutes = 2 if os.environ.get("CI") == "true" else 1
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", str(minutes),
                             "--boards", "3"], capture_output=True, text=True, timeout=minutes * 60 + 420, cwd=ROOT)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    figures = dict(re.findall(r"(\w+)=(\S+)", last))
    assert last.startswith("soak: "), last
    assert int(figures["jobs"]) > 0 and figures["final"] == figures["jobs"], last
    assert figures["double_booked"] == "0" and figures["leftover"] == "0", last
    events = dict(re.findall(r"(\w+)=(\d+)", next(line for line in result.stdout.splitlines()
                                                   if line.startswith("events: "))))
    # Every kind of failure happened at least once.
    for name in ("worker_kills", "celery_kills", "redis_restarts", "cancels", "hanging"):
        assert int(events[name]) >= 1, (name, events)
