"""``lava-run``: LAVA's command line, proven with a real client (tuxrun 1.11 from PyPI, ``--runtime null``).

tuxrun is installed at test time in its own virtualenv under the cache
directory (``pip install tuxrun==1.11``); without PyPI the tuxrun tests are
skipped. It finds ``lava-run`` on the PATH: a two-line script that runs this
tree's ``tasks.lava_run``. The images come from
tests/boards/build-tuxrun-images.sh (the boards' kernels, a busybox
rootfs.cpio.gz that logs in like tuxrun's root filesystems).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUXRUN = "tuxrun==1.11"
LAVA_SUITE = ["validate", "file-download", "execute-qemu", "kernel-messages", "login-action", "job"]


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lava-dispatch"


@pytest.fixture(scope="session")
def tuxrun() -> Path:
    """The tuxrun command of a virtualenv that holds tuxrun 1.11 (and its tuxlava)."""
    venv = cache_root() / "tuxrun-1.11"
    command = venv / "bin" / "tuxrun"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", TUXRUN], capture_output=True,
                                   text=True, timeout=900)
        if installed.returncode != 0:
            pytest.skip(f"cannot install {TUXRUN} from PyPI: {(installed.stderr or installed.stdout)[-300:]}")
    return command


@pytest.fixture(scope="session")
def tuxrun_images() -> Path:
    result = subprocess.run(["bash", str(ROOT / "tests/boards/build-tuxrun-images.sh")], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def lava_run_bin(directory: Path) -> Path:
    """A directory with ``lava-run`` (this tree's) for the PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "lava-run"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m tasks.lava_run \"$@\"\n")
    script.chmod(0o755)
    return directory


def environment(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    # TMPDIR marks every process of the run (tuxrun, lava-run, QEMU) for the leftover check.
    return {**os.environ, "PATH": f"{lava_run_bin(tmp_path / 'bin')}:{os.environ['PATH']}", "TMPDIR": str(scratch)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.qemu
@pytest.mark.parametrize("device,kernel", [("qemu-x86_64", "x86_64/bzImage"), ("qemu-arm64", "arm64/Image")])
def test_tuxrun_boots_through_our_lava_run(tuxrun, tuxrun_images, tmp_path, no_leftovers, device, kernel):
    rootfs = tuxrun_images / kernel.split("/")[0] / "rootfs.cpio.gz"
    results = tmp_path / "results.json"
    run = subprocess.run([str(tuxrun), "--runtime", "null", "--device", device,
                          "--kernel", f"file://{tuxrun_images / kernel}", "--rootfs", f"file://{rootfs}",
                          "--results", str(results), "--log-file-yaml", str(tmp_path / "log.yaml")],
                         capture_output=True, text=True, timeout=1500, cwd=tmp_path, env=environment(tmp_path))
    assert run.returncode == 0, (run.stdout[-4000:], run.stderr[-2000:])
    lava = json.loads(results.read_text())["lava"]
    assert [case for case in lava if case in LAVA_SUITE] == LAVA_SUITE, lava
    assert all(lava[case]["result"] == "pass" for case in LAVA_SUITE if case != "file-download"), lava
    downloads = lava["file-download"]
    assert {label: entry["extra"]["sha256sum"] for label, entry in downloads.items()} == {
        "kernel": sha256(tuxrun_images / kernel), "rootfs": sha256(rootfs)}
    assert all(entry["result"] == "pass" for entry in downloads.values())
    qemu = lava["execute-qemu"]["extra"]
    assert qemu["job_arch"] == device.removeprefix("qemu-") and qemu["qemu_version"] and qemu["host_arch"]
    # Every line tuxrun read was one of LAVA's levels.
    levels = {record["lvl"] for record in yaml.safe_load((tmp_path / "log.yaml").read_text())}
    assert levels <= {"debug", "info", "warning", "error", "exception", "target", "input", "feedback", "results",
                      "event"}, levels
    assert "target" in levels and "results" in levels
    # lava-run's own output files, in tuxrun's --output-dir.
    assert yaml.safe_load((tmp_path / "output" / "result.yaml").read_text()) == {
        "definition": "lava", "case": "job", "result": "pass"}
    assert (tmp_path / "output" / "description.yaml").is_file() and (tmp_path / "output" / "logs.yaml").is_file()


TUXLAVA_DEVICE = """\
# As tuxlava renders it: no device_type, commands or parameters; boot_options with an integer key.
constants:
  shell-prompts: []
available_architectures: [x86_64, arm64]
actions:
  deploy:
    methods:
      image:
        parameters: {guest: {size: 512, interface: ide, driveid: lavatest}}
  boot:
    methods:
      qemu:
        parameters:
          command: qemu-system-x86_64
          boot_options:
            {root: /dev/sda1, console: ttyS0,115200}
          options: [-cpu Nehalem, -machine q35, -nographic, -nic none, -m 256, -monitor none]
          extra: ['-no-reboot', '-smp 2']
timeouts:
  actions:
    apply-overlay-image: {minutes: 2}
"""


def lava_job(images: str, **extra: str) -> str:
    return textwrap.dedent(f"""\
        device_type: qemu
        job_name: lava-run check
        visibility: public
        priority: low
        context: {{arch: x86_64}}
        timeouts:
          job: {{minutes: 10}}
          action: {{minutes: 5}}
          actions: {{power-off: {{seconds: 30}}}}
        actions:
        - deploy:
            to: tmpfs
            os: oe
            images:
              kernel:
                image_arg: '-kernel {{kernel}} -append "console=ttyS0,115200 rootwait"'
                url: "file://{images}/x86_64/bzImage"
              rootfs:
                image_arg: "-initrd {{rootfs}}"
                url: "file://{images}/x86_64/rootfs.cpio.gz"
                compression: gz
        - boot:
            method: qemu
            timeout: {{minutes: 10}}
            auto_login: {{login_prompt: 'login:', username: root}}
            prompts: ['root@(.*):[/~]#']
        """)


def lava_run(tmp_path: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # capture_output waits for stderr's end of file: a child left holding it would hang here.
    return subprocess.run([sys.executable, "-m", "tasks.lava_run", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**environment(tmp_path), "PYTHONPATH": str(ROOT)})


def stderr_records(run: subprocess.CompletedProcess[str]) -> list[dict]:
    return [yaml.safe_load(line) for line in run.stderr.splitlines()]


def test_console_script_is_named_lava_run():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lava-run"] == "tasks.lava_run:console"


def test_a_job_id_that_is_not_a_plain_word_is_refused(tmp_path):
    run = lava_run(tmp_path, "--job-id", "../x", "--output-dir", str(tmp_path / "out"), "--device", "d", "j")
    assert run.returncode == 2 and "--job-id" in run.stderr and not (tmp_path / "out").exists()


def test_validate_takes_tuxlavas_device_dictionary(tmp_path):
    (tmp_path / "device.yaml").write_text(TUXLAVA_DEVICE)
    (tmp_path / "job.yaml").write_text(lava_job("/nonexistent"))
    out = tmp_path / "out"
    run = lava_run(tmp_path, "--job-id", "7", "--output-dir", str(out), "--validate", "--skip-sudo-warning",
                   "--device", str(tmp_path / "device.yaml"), str(tmp_path / "job.yaml"))
    assert run.returncode == 0, run.stderr
    records = stderr_records(run)
    assert {r["lvl"] for r in records} <= {"warning", "results", "info"}
    # tuxrun's named timeouts all name actions here (power-off is finalize's, as in LAVA): no warning
    assert not any(r["lvl"] == "warning" and "power-off" in r["msg"] for r in records)
    assert [r["msg"]["case"] for r in records if r["lvl"] == "results"] == ["validate"]
    description = yaml.safe_load((out / "description.yaml").read_text())
    assert description["device_type"] == "qemu"
    assert {"deployimages", "file-download", "execute-qemu", "power-off"} <= {a["name"] for a in
                                                                               description["pipeline"]}
    assert yaml.safe_load((out / "result.yaml").read_text())["result"] == "pass"
    assert (out / "logs.yaml").read_text().startswith('- {"dt": ')


def test_a_bad_job_fails_as_lava_reports_it(tmp_path):
    (tmp_path / "device.yaml").write_text(TUXLAVA_DEVICE)
    (tmp_path / "job.yaml").write_text(lava_job("/nonexistent").replace("method: qemu", "method: fastboot"))
    out = tmp_path / "out"
    run = lava_run(tmp_path, "--job-id", "8", "--output-dir", str(out), "--skip-sudo-warning",
                   "--device", str(tmp_path / "device.yaml"), str(tmp_path / "job.yaml"))
    assert run.returncode == 1
    records = stderr_records(run)
    assert any(r["lvl"] == "error" and "fastboot" in r["msg"] for r in records), run.stderr
    results = {r["msg"]["case"]: r["msg"]["result"] for r in records if r["lvl"] == "results"}
    assert results == {"validate": "fail", "job": "fail"}
    assert yaml.safe_load((out / "result.yaml").read_text()) == {"definition": "lava", "case": "job", "result": "fail"}
    assert "Traceback" not in run.stderr


@pytest.mark.qemu
def test_lava_run_boots_and_leaves_nothing_holding_stderr(tuxrun_images, tmp_path, no_leftovers):
    (tmp_path / "device.yaml").write_text(TUXLAVA_DEVICE)
    (tmp_path / "job.yaml").write_text(lava_job(str(tuxrun_images)))
    out = tmp_path / "out"
    run = lava_run(tmp_path, "--job-id", "9", "--output-dir", str(out), "--skip-sudo-warning",
                   "--device", str(tmp_path / "device.yaml"), str(tmp_path / "job.yaml"), timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    results = [r["msg"] for r in stderr_records(run) if r["lvl"] == "results" and r["msg"]["case"] in LAVA_SUITE]
    assert [(r["case"], r["result"]) for r in results] == [
        ("validate", "pass"), ("file-download", "pass"), ("file-download", "pass"), ("execute-qemu", "pass"),
        ("kernel-messages", "pass"), ("login-action", "pass"), ("job", "pass")]
    assert [r["extra"]["label"] for r in results if r["case"] == "file-download"] == ["kernel", "rootfs"]
    # The prompt came with an escape sequence after it and no newline (the console log drops the escape).
    assert b"PS1=\"root@tuxrun:~# $(printf '\\033[?2004h')\"" in gzip.decompress(
        (tuxrun_images / "x86_64/rootfs.cpio.gz").read_bytes())
    assert any(r["lvl"] == "target" and r["msg"].startswith("root@tuxrun:~# true; echo")
               for r in stderr_records(run))
