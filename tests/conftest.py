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


# ---------------------------------------------------------------- real parts: processes, images, servers

import functools
import http.server
import os
import signal
import subprocess
import textwrap
import threading

import yaml
from lab_helpers import wait_for  # noqa: F401 - one deadline wait for every test module


def processes_matching(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` or whose directory is under it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if (text in cmdline or cwd.startswith(text)) and state != "Z" and int(entry) != os.getpid():
            found.append(int(entry))
    return found


@pytest.fixture(scope="session")
def images() -> Path:
    """The emulated boards' images (built once, cached outside the repository)."""
    result = subprocess.run(["bash", str(ROOT / "tests" / "boards" / "build-images.sh")], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert (path / "x86_64" / "vmlinux").exists()
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Start an HTTP server on 127.0.0.1 for a directory; returns a function dir -> base URL."""
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class JobRun:
    code: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def results(self) -> list[dict]:
        return yaml.safe_load((self.output_dir / "results.yaml").read_text())

    @property
    def log(self) -> list[dict]:
        return yaml.safe_load((self.output_dir / "output.yaml").read_text())

    def messages(self) -> list[str]:
        return [r["msg"] for r in self.log if isinstance(r["msg"], str)]

    def case(self, name: str) -> dict:
        matches = [r for r in self.results if r["case"] == name]
        assert matches, f"no result for {name}: {self.results}"
        return matches[0]

    def job_result(self) -> dict:
        return next(r for r in self.results if r["suite"] == "lava" and r["case"] == "job")


def run_job(tmp_path: Path, job_text: str, device: str | Path, timeout: float = 300, env: dict | None = None,
            name: str = "job") -> JobRun:
    """Run ``lava-dispatch run`` as a real process; its scratch files live under tmp_path."""
    job_file = tmp_path / f"{name}.yaml"
    job_file.write_text(job_text)
    output_dir = tmp_path / f"{name}-output"
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    environment = {**os.environ, "TMPDIR": str(scratch), **(env or {})}
    device_file = device if isinstance(device, Path) else DEVICES / f"{device}.yaml"
    result = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(job_file), "--device", str(device_file),
                             "--output-dir", str(output_dir)], capture_output=True, text=True, timeout=timeout,
                            env=environment, cwd=ROOT)
    return JobRun(result.returncode, result.stdout, result.stderr, output_dir)


def processes_of(path: Path | str) -> list[int]:
    """Live processes that mention ``path`` in their command line, working directory or environment
    (``run_job`` gives the run TMPDIR=tmp_path/scratch, which its helpers and the board's shell inherit)."""
    needle = str(path).encode()
    found = set(processes_matching(str(path)))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                mentioned = needle in handle.read()
            with open(f"/proc/{entry}/stat") as handle:
                zombie = handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if mentioned and not zombie:
            found.add(int(entry))
    return sorted(found)


def cmdline_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def no_leftovers(tmp_path):
    """Fail the test if a process it started (QEMU, shells, what a test step left) outlives it.

    The survivors are killed before the failure is reported, so one leak cannot break later tests.
    """
    yield
    try:
        wait_for(lambda: not processes_of(tmp_path), 10, f"processes of {tmp_path} to end")
    except AssertionError:
        left = processes_of(tmp_path)
        described = [f"{pid}: {cmdline_of(pid)}" for pid in left]
        kill_pids(left)
        raise AssertionError(f"processes outlived the test: {described}") from None


@pytest.fixture
def markers():
    """``markers(300)`` -> a unique sleep duration such as "300.048291" to tag a process the test starts.

    The test fails, and the survivors are killed, if a process so tagged outlives it.
    """
    import secrets

    made: list[str] = []

    def make(seconds: int) -> str:
        made.append(f"{seconds}.{secrets.randbelow(10 ** 6):06d}")
        return made[-1]

    yield make
    left = sorted({pid for marker in made for pid in processes_matching(marker)})
    described = [f"{pid}: {cmdline_of(pid)}" for pid in left]
    kill_pids(left)
    assert not left, f"tagged processes outlived the test: {described}"


def kvm_images(images: Path, indent: int = 6) -> str:
    """The deploy keys of a kernel + ramdisk job on the emulated x86_64 board (the overlay in the ramdisk)."""
    block = textwrap.dedent(f"""\
        to: tmpfs
        os: oe
        images:
          kernel:
            url: file://{images}/x86_64/vmlinux
            image_arg: -kernel {{kernel}} -append "console=ttyS0 panic=-1 quiet"
          ramdisk:
            url: file://{images}/x86_64/initrd.cpio.gz
            image_arg: -initrd {{ramdisk}}
            format: cpio.newc
            overlays: {{lava: true}}
        """)
    return textwrap.indent(block, " " * indent)
