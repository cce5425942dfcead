"""What ``lava-run`` writes as LAVA does: its log lines, and the results of LAVA's ``lava`` suite.

A LAVA log line is one YAML flow mapping ``{"dt": ..., "lvl": ..., "msg": ...}``
per line, on stderr and (as a list item) in ``logs.yaml``; clients such as
tuxrun read stderr line by line and keep the ``results`` records. Those are
``{"definition": ..., "case": ..., "result": ...}``: a test definition's
cases under its run's name, and LAVA's own ``lava`` suite (``validate``,
each ``file-download``/``http-download`` with its label and sha256sum,
``execute-qemu`` with the QEMU version, ``kernel-messages``,
``login-action``, ``job``), which the engine's actions are mapped to here.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, TextIO

from pipeline.context import JobContext, Step, TestCaseResult
from pipeline.download import local_path
from pipeline.log import LEVELS, Record, record_line

# LAVA's log levels: a record of any other level is written as info.
LAVA_LEVELS = frozenset(LEVELS) | {"event"}
# Debian's QEMU package of each QEMU binary suffix, whose version LAVA reports.
QEMU_PACKAGES = {"x86_64": "qemu-system-x86", "i386": "qemu-system-x86", "aarch64": "qemu-system-arm",
                 "arm": "qemu-system-arm"}


def lava_record(record: Record) -> Record:
    """One record of the engine's log as LAVA writes it."""
    level = record["lvl"] if record["lvl"] in LAVA_LEVELS else "info"
    msg = record["msg"]
    if level == "results" and isinstance(msg, dict):
        # LAVA names a result's suite "definition" (the test run's name, e.g. 0_smoke).
        msg = {"definition": msg.get("suite", msg.get("definition")),
               **{key: value for key, value in msg.items() if key not in ("suite", "definition")}}
        if isinstance(msg.get("duration"), float):
            msg["duration"] = f"{msg['duration']:.02f}"  # LAVA writes seconds as a string
    return {"dt": f"{record['dt']}+00:00", "lvl": level, "msg": msg}


class LavaLogSink:
    """Writes every record as a LAVA log line on ``stream`` and into ``logs.yaml``."""

    def __init__(self, stream: TextIO, log_file: Path):
        self.stream = stream
        self.file = open(log_file, "w", encoding="utf-8", buffering=1)

    def __call__(self, record: Record) -> None:
        line = record_line(lava_record(record))
        self.file.write(line)
        self.stream.write(line[2:])  # without the "- " of a list item
        self.stream.flush()

    def close(self) -> None:
        """The engine closes its sinks when the job ends: lava-run still logs after that (see finish)."""

    def finish(self) -> None:
        self.file.close()


def lava_result(case: str, result: str, step: Step | None = None,
                extra: dict[str, Any] | None = None) -> TestCaseResult:
    details: dict[str, Any] = {"namespace": "common"}
    if extra is not None:
        details["extra"] = extra
    return TestCaseResult("lava", case, result, definition="lava", level=step.level if step else "",
                          duration=step.duration if step else None, extra=details)


@functools.cache
def qemu_version(command: str) -> tuple[str, str]:
    """(the QEMU version, the host architecture), as LAVA reports them: Debian's package when installed."""
    suffix = Path(command).name.removeprefix("qemu-system-")
    package = QEMU_PACKAGES.get(suffix)
    if package and shutil.which("dpkg-query"):
        found = subprocess.run(["dpkg-query", "-W", "-f=${Version} ${Architecture}", package],
                               capture_output=True, text=True, check=False)
        fields = found.stdout.split()
        if found.returncode == 0 and len(fields) == 2:
            return fields[0], fields[1]
    found = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    words = found.stdout.split()
    return (words[3] if len(words) > 3 else "unknown"), platform.machine()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LavaSuite:
    """Adds LAVA's ``lava`` suite results as the engine's actions end (a JobContext ended hook)."""

    def __init__(self) -> None:
        self.kernel_checked = False

    def __call__(self, step: Step, ctx: JobContext) -> None:
        passed = "pass" if step.result == "pass" else "fail"
        name = step.name
        if name in ("file-download", "http-download"):
            ctx.add_result(lava_result(name, passed, step, self.download_extra(step, ctx)))
        elif name == "execute-qemu":
            command = str(ctx.device.boot_parameters("qemu").get("command") or "qemu-system-x86_64")
            version, host = qemu_version(command)
            arch = (ctx.job.header.context or {}).get("arch") or Path(command).name.removeprefix("qemu-system-")
            ctx.add_result(lava_result(name, passed, step, {"job_arch": arch, "host_arch": host,
                                                            "qemu_version": version}))
        elif name == "auto-login-action":
            self.kernel_messages(step, ctx, passed)
        elif name == "expect-shell-connection":
            self.kernel_messages(step, ctx, passed)
            message = "shell prompt reached" if passed == "pass" else "no shell prompt"
            ctx.add_result(lava_result("login-action", passed, step, {"success" if passed == "pass" else "fail":
                                                                      message}))

    def kernel_messages(self, step: Step, ctx: JobContext, passed: str) -> None:
        """Once per boot: the kernel reached the login prompt (or the shell) without a panic."""
        if self.kernel_checked:
            return
        self.kernel_checked = True
        ctx.add_result(lava_result("kernel-messages", passed, step))

    @staticmethod
    def download_extra(step: Step, ctx: JobContext) -> dict[str, Any]:
        key = str(getattr(step, "key", ""))
        extra: dict[str, Any] = {"label": key}
        spec = getattr(step, "spec", None)
        stored = ctx.deployment.images.get(key) if ctx.deployment is not None else None
        url = str(getattr(spec, "url", ""))
        try:
            # LAVA sums what it downloaded: for a local file, the file itself (before decompression).
            source = local_path(url, ctx.file_roots) if url.startswith("file://") else stored
            if source is not None and Path(source).is_file():
                extra["size"] = Path(source).stat().st_size
                extra["sha256sum"] = sha256_of(Path(source))
        except Exception:  # noqa: BLE001 - the sum is information; a failed download is reported already
            pass
        return extra
