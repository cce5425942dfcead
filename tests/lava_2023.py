"""LAVA 2023.01's own dispatcher, for tests that run the same job on it and on our engine.

Debian's ``lava-dispatcher`` and ``lava-common`` packages are downloaded and
unpacked (``apt-get download``, ``dpkg-deb -x``; nothing of LAVA is
installed) into ``$XDG_CACHE_HOME/lava-dispatch/lava-dispatcher``; the
Python packages they depend on are Debian's (apt-get installs the missing
ones when run as root). Its ``lava-run`` then runs under Debian's
``/usr/bin/python3``. Without apt or a mirror, the tests are skipped.

One part is replaced: libguestfs, which LAVA uses only to make the qcow2
disk that carries the test overlay to a QEMU guest (it boots an appliance
VM for that). The stand-in makes the same disk with host tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from lava_reference import _download, _run

PACKAGES = ("lava-dispatcher", "lava-common", "lava-dispatcher-host")
# Debian's Python packages that LAVA 2023.01's lava-run imports.
PYTHON_DEBS = ("python3-yaml", "python3-jinja2", "python3-pexpect", "python3-requests", "python3-configobj",
               "python3-setproctitle", "python3-pyudev", "python3-netifaces", "python3-magic", "python3-tz",
               "python3-voluptuous")
IMPORTS = "import yaml, jinja2, pexpect, requests, configobj, setproctitle, pyudev, netifaces, magic, pytz, voluptuous"
PYTHON = "/usr/bin/python3"
# Where LAVA keeps each job's files (its DISPATCHER_DOWNLOAD_DIR).
LAVA_JOBS = Path("/var/lib/lava/dispatcher/tmp")

GUESTFS = '''"""libguestfs's binding as far as LAVA's prepare_guestfs uses it: a qcow2 disk holding an ext2
filesystem (labelled, with a known UUID) with the overlay in it, made with mke2fs -d and qemu-img."""
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid


class GuestFS:
    def __init__(self, python_return_dict=True):
        self.output, self.size, self.label = None, 0, ""
        self.tree = tempfile.mkdtemp()
        self.uuid = str(uuid.uuid4())

    def disk_create(self, output, fmt, size):
        self.output, self.size = output, size

    def add_drive_opts(self, output, format=None, readonly=False):
        pass

    def launch(self):
        pass

    def list_devices(self):
        return ["/dev/sda"]

    def mke2fs(self, device, label=""):
        self.label = label

    def mount(self, device, path):
        pass

    def tar_in(self, tar, path):
        with tarfile.open(tar) as archive:
            archive.extractall(self.tree)

    def umount(self, device):
        raw = self.output + ".raw"
        subprocess.run(["mkfs.ext2", "-q", "-F", "-L", self.label, "-U", self.uuid, "-d", self.tree, raw,
                        "%dk" % (self.size // 1024)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, self.output], check=True)
        os.unlink(raw)
        shutil.rmtree(self.tree, ignore_errors=True)

    def blkid(self, device):
        return {"UUID": self.uuid}

    def close(self):
        pass
'''


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lava-dispatch" / "lava-dispatcher"


def _python_ready() -> bool:
    return subprocess.run([PYTHON, "-c", IMPORTS], capture_output=True, timeout=60).returncode == 0


def ensure_python() -> None:
    if not Path(PYTHON).exists():
        pytest.skip(f"LAVA 2023.01 runs under Debian's {PYTHON}, which is not installed")
    if _python_ready():
        return
    if os.geteuid() != 0:
        pytest.skip(f"LAVA 2023.01 needs Debian's {', '.join(PYTHON_DEBS)} (apt-get install, as root)")
    result = _run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                   "--no-install-recommends", *PYTHON_DEBS])
    if result.returncode != 0 or not _python_ready():
        pytest.skip(f"cannot install LAVA 2023.01's Python packages: {(result.stderr or result.stdout)[-300:]}")


def fetch_lava_dispatcher() -> tuple[Path, str]:
    """(the unpacked root holding usr/bin/lava-run, the package version), downloaded once."""
    ensure_python()
    cache = cache_dir()
    root, version_file = cache / "root", cache / "version"
    if (root / "usr/bin/lava-run").is_file() and version_file.is_file():
        return root, version_file.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        work = Path(tmp)
        debs = [_download(work, package) for package in PACKAGES]
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).stdout.strip()
        for deb in debs:
            result = _run(["dpkg-deb", "-x", str(deb), str(work / "root")])
            if result.returncode != 0:
                pytest.skip(f"cannot unpack {deb.name}: {result.stderr.strip()}")
        stand_in = work / "root" / "stand-in"
        stand_in.mkdir()
        (stand_in / "guestfs.py").write_text(GUESTFS)
        shutil.rmtree(root, ignore_errors=True)
        (work / "root").rename(root)  # whole or not at all
        version_file.write_text(version + "\n")
    return root, version


def run_lava(root: Path, job: Path, device: Path, dispatcher: Path, output_dir: Path, job_id: str,
             env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """LAVA 2023.01's lava-run on ``job``; its job directory under LAVA_JOBS is removed afterwards."""
    python_path = f"{root / 'usr/lib/python3/dist-packages'}:{root / 'stand-in'}"
    try:
        return subprocess.run([PYTHON, str(root / "usr/bin/lava-run"), "--job-id", job_id, "--output-dir",
                               str(output_dir), "--device", str(device), "--dispatcher", str(dispatcher), str(job)],
                              capture_output=True, text=True, timeout=timeout,
                              env={**env, "PYTHONPATH": python_path}, cwd=output_dir.parent)
    finally:
        for path in LAVA_JOBS.glob(f"*{job_id}"):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lava_dispatcher() -> tuple[Path, str]:
    return fetch_lava_dispatcher()
