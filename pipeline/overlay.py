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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from pipeline import safefs, yamlload
from pipeline.checks import shell_name_problem
from pipeline.errors import JobError, YamlRejected
from pipeline.limits import TESTDEF_FILE_BYTES
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


MULTINODE_SCRIPTS = frozenset({"lava-group", "lava-multi-node-call", "lava-role", "lava-self", "lava-send",
                               "lava-sync", "lava-wait", "lava-wait-all"})


def copy_scripts(root: Path, multinode: bool | None = None) -> None:
    """The on-board scripts into ``root``/bin: all of them, or only the multinode API's (True) or the others."""
    for script in sorted(SCRIPTS_DIR.iterdir()):
        if not script.name.startswith("lava-"):
            continue
        if multinode is not None and (script.name in MULTINODE_SCRIPTS) != multinode:
            continue
        safefs.write_under(root, f"bin/{script.name}", script.read_bytes(), "overlay", mode=0o755,
                           make_parents=True)


def exports(values: dict[Any, Any], place: str) -> list[str]:
    """``export NAME='value'`` lines; a name that is not a shell variable name is refused."""
    lines = []
    for key, value in values.items():
        problem = shell_name_problem(key)
        if problem:
            raise JobError(f"{place}: {problem}")
        lines.append(f"export {key}={shlex.quote(str(value))}\n")
    return lines


def write_environment(root: Path, values: dict[str, str]) -> None:
    lines = exports(dict(sorted(values.items())), "environment")
    safefs.write_under(root, "environment", "".join(lines), "overlay")


def locate_testdef(root: Path, relpath: str, place: str) -> str:
    """The path of a definition file under ``root`` with its links resolved; refused if they lead out."""
    return safefs.resolve_under(root, relpath, f"{place}.path")


def load_testdef(root: Path, relpath: str, place: str) -> dict[str, Any]:
    """Read and check the definition ``relpath`` of a fetched repository, never through a link out of it.

    An error quotes no line of the file: a file:// definition may be any
    file the worker can read.
    """
    data = safefs.read_under(root, locate_testdef(root, relpath, place), f"{place}.path", TESTDEF_FILE_BYTES)
    try:
        # The job's repository is as hostile as the job: the same bounded loader as a job file.
        parsed = yamlload.load(data.decode(), "test definition", f"{place}: ")
    except YamlRejected as exc:
        raise JobError("; ".join(_unquoted(problem, place) for problem in exc.problems)) from None
    except UnicodeDecodeError as exc:
        raise JobError(f"{place}: the test definition is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    check_testdef(parsed, place)
    return cast(dict[str, Any], parsed)  # check_testdef refuses anything but a mapping


def _unquoted(problem: str, place: str) -> str:
    """A loader problem without the file's own text (a file:// definition may be any host file)."""
    problem = problem.removeprefix(f"{place}: ")
    problem = re.sub(r"^\(test definition\)\S*: ", "", problem)  # the place inside the file names its keys
    return f"{place}: " + re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", problem)


def check_testdef(data: Any, place: str) -> None:
    """The Lava-Test Test Definition 1.0 format, checked before anything runs (pipeline.testdef)."""
    problems = testdef_problems(data, place)
    if problems:
        raise JobError("; ".join(problems))


def skip_install(testdef: dict[str, Any], skipped: Sequence[str] | None) -> dict[str, Any]:
    """The definition without the install parts the job's ``skip_install`` names (``all``: every one)."""
    if not skipped or not isinstance(testdef.get("install"), dict):
        return testdef
    install = {} if "all" in skipped else {k: v for k, v in testdef["install"].items() if k not in skipped}
    return {**testdef, "install": install}


@dataclass
class Placement:
    """One definition being laid out: where it goes, what it says (filled by place_test)."""

    stage: int
    index: int
    suite: str  # "<index>_<name>"
    directory: Path  # on the dispatcher
    on_target: str  # the same directory on the board
    testdef: dict[str, Any]
    exported: list[str]  # the definition's parameters as ``export`` lines
    place: str


def place_test(stage_dir: Path, stage: int, index: int, name: str, testdef: dict[str, Any],
               source_dir: Path | None, params: dict[str, Any], test_root: str,
               place: str = "definition") -> Placement:
    """Lay out one definition's files, its testdef.yaml and uuid (install.sh and run.sh come after).

    Job data enters the scripts only as shell words (shlex.quote); the
    files are written through safefs, never through a link of the
    definition's own tree.
    """
    suite = f"{index}_{name}"
    directory = stage_dir / "tests" / suite
    if source_dir is not None:
        # Links are copied as links, never followed (safefs refuses to write through them below).
        shutil.copytree(source_dir, directory, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    directory.mkdir(parents=True, exist_ok=True)
    safefs.write_under(directory, "testdef.yaml", yaml.safe_dump(testdef, sort_keys=False), place)
    safefs.write_under(directory, "uuid", f"{uuid.uuid4()}\n", place)
    defaults = testdef.get("params") or testdef.get("parameters") or {}
    exported = exports({**defaults, **params}, f"{place}.params")
    return Placement(stage, index, suite, directory, f"{test_root}/{stage}/tests/{suite}", testdef, exported, place)


def write_install(placed: Placement, os_name: str | None) -> None:
    """install.sh: the definition's deps (with the OS's package manager) and install steps, if it has any."""
    install = placed.testdef.get("install") or {}
    install_lines = [f"cd {shlex.quote(placed.on_target)}\n", *placed.exported]
    deps = [str(dep) for dep in install.get("deps") or []]
    if deps:
        names = " ".join(shlex.quote(dep) for dep in deps)
        installer = INSTALLERS.get(os_name or "")
        if installer:
            missing = shlex.quote(f"lava: cannot install deps ({' '.join(deps)}): no package manager")
            install_lines.append(f"if command -v {installer.split()[0]} >/dev/null 2>&1; then {installer} {names}; "
                                 f"else echo {missing}; fi\n")
        else:
            install_lines.append("echo " + shlex.quote(f"lava: deps not installed on os {os_name or 'unknown'}: "
                                                       + " ".join(deps)) + "\n")
    install_lines += [f"{step}\n" for step in install.get("steps") or []]
    if deps or install.get("steps"):
        safefs.write_under(placed.directory, "install.sh", "#!/bin/sh\n" + "".join(install_lines), placed.place,
                           mode=0o755)


def write_run(placed: Placement) -> StageTest:
    """run.sh: the definition's run steps under its TESTRUN_ID; the test as the stage will run it."""
    run_lines = ["#!/bin/sh\n", f"cd {shlex.quote(placed.on_target)}\n", *placed.exported,
                 f"export TESTRUN_ID={shlex.quote(placed.suite)}\n"]
    run_lines += [f"{step}\n" for step in placed.testdef["run"]["steps"]]
    safefs.write_under(placed.directory, "run.sh", "".join(run_lines), placed.place, mode=0o755)
    parse = placed.testdef.get("parse") or {}
    return StageTest(placed.stage, placed.index, placed.suite, placed.directory, placed.testdef, parse.get("pattern"),
                     {str(k): str(v) for k, v in (parse.get("fixupdict") or {}).items()})


def write_test(stage_dir: Path, stage: int, index: int, name: str, testdef: dict[str, Any],
               source_dir: Path | None, params: dict[str, Any], os_name: str | None, test_root: str,
               place: str = "definition") -> StageTest:
    """Lay out one definition: its files, install.sh and run.sh."""
    placed = place_test(stage_dir, stage, index, name, testdef, source_dir, params, test_root, place)
    write_install(placed, os_name)
    return write_run(placed)


def write_stage_conf(stage_dir: Path, tests: list[StageTest], test_root: str, stage: int) -> None:
    lines = "".join(f"{test_root}/{stage}/tests/{test.name}\n" for test in tests)
    safefs.write_under(stage_dir, "lava-test-runner.conf", lines, "overlay", make_parents=True)


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
