"""The LAVA overlay: test definitions plus the on-target scripts.

Layout on the board (``ROOT`` is the device's ``lava_test_results_dir``,
``/lava-<job>`` by default; the tarball holds paths relative to ROOT)::

    ROOT/bin/lava-test-runner, lava-test-case, ...   the on-target API
    ROOT/environment                                  sourced by the runner
    ROOT/<stage>/lava-test-runner.conf                one test dir per line
    ROOT/<stage>/tests/<n>_<name>/{testdef.yaml, run.sh, install.sh, uuid, ...}

A stage is one test action of the job, so each test action runs only its
own definitions. The overlay is packed as a tarball kept with the job's
output, then applied to the deployment (ramdisk, NFS root or a drive).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import stat
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import yamlload
from pipeline.errors import JobError
from pipeline.testdef import testdef_problems

SCRIPTS_DIR = Path(__file__).parent / "overlay_scripts"
INSTALLERS = {"debian": "apt-get install -y", "ubuntu": "apt-get install -y"}


@dataclass
class StageTest:
    """One test definition placed in the overlay."""

    stage: int
    index: int
    name: str  # the suite name, e.g. "0_smoke-tests"
    directory: Path  # on the dispatcher
    testdef: dict[str, Any]
    parse_pattern: str | None
    fixupdict: dict[str, str]


def safe_suite(name: str) -> str:
    """A suite name usable as a directory and in signals."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "test"


def results_dir(template: str, job_id: str) -> str:
    return template.replace("{job_id}", job_id).replace("%s", job_id)


def copy_scripts(root: Path) -> None:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for script in sorted(SCRIPTS_DIR.iterdir()):
        if script.name.startswith("lava-"):
            target = bin_dir / script.name
            shutil.copyfile(script, target)
            target.chmod(0o755)


def write_environment(root: Path, values: dict[str, str]) -> None:
    lines = [f"export {key}={shlex.quote(str(value))}\n" for key, value in sorted(values.items())]
    (root / "environment").write_text("".join(lines))


def load_testdef(path: Path, place: str) -> dict[str, Any]:
    if not path.is_file():
        raise JobError(f"{place}: the test definition {path.name!r} does not exist in the repository")
    try:
        # The job's repository is as hostile as the job: the same bounded loader, at most the same size.
        with path.open("rb") as handle:
            data = yamlload.load(handle.read(yamlload.max_bytes_from_env() + 1).decode(), "test definition",
                                 f"{place}: ")
    except yamlload.YamlRejected as exc:
        raise JobError("; ".join(exc.problems)) from None
    except UnicodeDecodeError as exc:
        raise JobError(f"{place}: the test definition is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    check_testdef(data, place)
    return data


def check_testdef(data: Any, place: str) -> None:
    """The Lava-Test Test Definition 1.0 format, checked before anything runs (pipeline.testdef)."""
    problems = testdef_problems(data, place)
    if problems:
        raise JobError("; ".join(problems))


def write_test(stage_dir: Path, stage: int, index: int, name: str, testdef: dict[str, Any],
               source_dir: Path | None, params: dict[str, Any], os_name: str | None, test_root: str) -> StageTest:
    """Lay out one definition: its files, install.sh and run.sh."""
    suite = f"{index}_{name}"
    directory = stage_dir / "tests" / suite
    if source_dir is not None:
        shutil.copytree(source_dir, directory, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "testdef.yaml").write_text(yaml.safe_dump(testdef, sort_keys=False))
    (directory / "uuid").write_text(f"{uuid.uuid4()}\n")
    on_target = f"{test_root}/{stage}/tests/{suite}"
    exports = []
    defaults = testdef.get("params") or testdef.get("parameters") or {}
    for key, value in {**defaults, **params}.items():
        exports.append(f"export {key}={shlex.quote(str(value))}\n")
    install = testdef.get("install") or {}
    install_lines = [f"cd {shlex.quote(on_target)}\n"] + exports
    deps = install.get("deps") or []
    if deps:
        names = " ".join(shlex.quote(str(dep)) for dep in deps)
        installer = INSTALLERS.get(os_name or "")
        if installer:
            install_lines.append(f"if command -v {installer.split()[0]} >/dev/null 2>&1; then {installer} {names}; "
                                 f"else echo 'lava: cannot install deps ({names}): no package manager'; fi\n")
        else:
            install_lines.append(f"echo 'lava: deps not installed on os {os_name or 'unknown'}: {names}'\n")
    install_lines += [f"{step}\n" for step in install.get("steps") or []]
    if deps or install.get("steps"):
        (directory / "install.sh").write_text("#!/bin/sh\n" + "".join(install_lines))
    run_lines = ["#!/bin/sh\n", f"cd {shlex.quote(on_target)}\n", *exports,
                 f"export TESTRUN_ID={shlex.quote(suite)}\n"]
    run_lines += [f"{step}\n" for step in testdef["run"]["steps"]]
    (directory / "run.sh").write_text("".join(run_lines))
    parse = testdef.get("parse") or {}
    return StageTest(stage, index, suite, directory, testdef, parse.get("pattern"),
                     {str(k): str(v) for k, v in (parse.get("fixupdict") or {}).items()})


def write_stage_conf(stage_dir: Path, tests: list[StageTest], test_root: str, stage: int) -> None:
    lines = "".join(f"{test_root}/{stage}/tests/{test.name}\n" for test in tests)
    (stage_dir / "lava-test-runner.conf").write_text(lines)


def pack_tarball(source: Path, tarball: Path) -> Path:
    """Pack ``source``'s contents (paths relative to it) as a gzip tarball."""
    with tarfile.open(tarball, "w:gz", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(source.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(source)), recursive=False)
    return tarball


def raw_tar_drive(tarball: Path, drive: Path) -> Path:
    """An uncompressed tar padded to whole sectors, attached as a raw drive: ``tar -xf /dev/vdX``."""
    with tarfile.open(tarball, "r:gz") as source, open(drive, "wb") as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as target:
            for member in source.getmembers():
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
        size = out.tell()
        out.write(b"\0" * ((-size) % 65536))
    return drive


def append_to_ramdisk(ramdisk: Path, source: Path, prefix: str) -> None:
    """Append ``source`` under ``prefix`` to a cpio ramdisk as a second archive (4-byte aligned)."""
    with open(ramdisk, "ab") as out:
        out.write(b"\0" * ((-ramdisk.stat().st_size) % 4))
        out.write(cpio_newc(source, prefix))


def cpio_newc(source: Path, prefix: str) -> bytes:
    """An uncompressed newc cpio of ``source``'s contents under ``prefix``, to append to an initramfs.

    The kernel unpacks concatenated archives, so the overlay needs no
    change to the published ramdisk's own bytes.
    """
    out = io.BytesIO()
    inode = 0x4C41  # any inode numbers distinct within the archive

    def entry(name: str, mode: int, data: bytes, mtime: int) -> None:
        nonlocal inode
        inode += 1
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(f"{value:08X}" for value in (
            inode, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(encoded), 0))
        out.write(header.encode() + encoded)
        out.write(b"\0" * ((-(110 + len(encoded))) % 4))
        out.write(data)
        out.write(b"\0" * ((-len(data)) % 4))

    parts = [part for part in prefix.strip("/").split("/") if part]
    for depth in range(1, len(parts) + 1):
        entry("/".join(parts[:depth]), stat.S_IFDIR | 0o755, b"", 0)
    for path in sorted(source.rglob("*")):
        info = path.lstat()
        name = "/".join([*parts, str(path.relative_to(source))])
        if stat.S_ISDIR(info.st_mode):
            entry(name, info.st_mode, b"", int(info.st_mtime))
        elif stat.S_ISLNK(info.st_mode):
            entry(name, info.st_mode, os.readlink(path).encode(), int(info.st_mtime))
        elif stat.S_ISREG(info.st_mode):
            entry(name, info.st_mode, path.read_bytes(), int(info.st_mtime))
    entry("TRAILER!!!", 0, b"", 0)
    data = out.getvalue()
    return data + b"\0" * ((-len(data)) % 512)
