"""LAVA's own device-type templates, for tests: Debian's lava-server package, fetched at test time.

LAVA is GPL-2.0 and not part of this project, so its templates are never
copied into the repository: the session fixture ``lava_device_types``
downloads the ``lava-server`` package with ``apt-get download`` (an
``apt-get update`` first, once, if apt knows no such package), unpacks it
with ``dpkg-deb -x`` (nothing is installed) into the cache directory
``$XDG_CACHE_HOME/lava-dispatch/lava-server`` (default ``~/.cache/...``),
and gives the directory holding its device-type templates. Later sessions
reuse the unpacked copy. Without apt, dpkg-deb or a reachable mirror, the
tests that need it are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "lava-server"


@dataclass(frozen=True)
class LavaTemplates:
    directory: Path  # the device-types directory (holds base.jinja2)
    version: str  # the Debian package's version, e.g. 2023.01-2

    def names(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*.jinja2"))


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lava-dispatch" / PACKAGE


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _find_templates(root: Path) -> Path | None:
    """The directory of the unpacked package that holds LAVA's base.jinja2 and its siblings."""
    candidates = sorted({p.parent for p in root.rglob("base.jinja2")}, key=lambda p: -len(list(p.glob("*.jinja2"))))
    return candidates[0] if candidates else None


def _download(work: Path, package: str = PACKAGE) -> Path:
    """The downloaded .deb of ``package`` in ``work``; pytest.skip when apt cannot give it."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"Debian's {package} package is needed: {tool} is not installed")
    result = _run(["apt-get", "download", package], cwd=work)
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh machine may have no package lists yet: update them once, then try again.
        _run(["apt-get", "update", "-qq"])
        result = _run(["apt-get", "download", package], cwd=work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no .deb written"]
        pytest.skip(f"cannot download Debian's {package} package: {reason[0]}")
    return debs[-1]


def fetch_lava_templates() -> LavaTemplates:
    """Download and unpack lava-server once per cache directory; its device-types directory."""
    cache = cache_dir()
    unpacked = cache / "root"
    version_file = cache / "version"
    found = _find_templates(unpacked) if unpacked.is_dir() else None
    if found is not None and version_file.is_file():
        return LavaTemplates(found, version_file.read_text().strip())
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        work = Path(tmp)
        deb = _download(work)
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip() or deb.name
        result = _run(["dpkg-deb", "-x", str(deb), str(work / "root")])
        if result.returncode != 0:
            pytest.skip(f"cannot unpack {deb.name}: {result.stderr.strip()}")
        if _find_templates(work / "root") is None:
            pytest.fail(f"{deb.name} holds no device-type templates (no base.jinja2)")
        shutil.rmtree(unpacked, ignore_errors=True)
        (work / "root").rename(unpacked)  # whole or not at all: a broken fetch leaves no half copy
        version_file.write_text(version + "\n")
    found = _find_templates(unpacked)
    assert found is not None
    return LavaTemplates(found, version)


@pytest.fixture(scope="session")
def lava_templates() -> LavaTemplates:
    return fetch_lava_templates()
