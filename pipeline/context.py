"""The per-job context: what actions share while a job runs.

Data passes between actions through typed attributes here, not a
free-form dictionary: a deploy action sets ``images``, the boot action
reads them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pipeline.action import Action, ActionTimeout, Deadlines, JobTimeout
from pipeline.errors import Canceled, ConfigurationError, InfrastructureError, TestError
from pipeline.log import JobLogger

if TYPE_CHECKING:
    from pipeline.connection import ShellConnection
    from pipeline.coordination import MultinodeClient
    from pipeline.device import Device
    from pipeline.fileserver import FileServer
    from pipeline.job import Job
    from pipeline.overlay import StageTest
    from pipeline.processes import ProcessRegistry


@dataclass
class TestCaseResult:
    __test__ = False
    suite: str
    case: str
    result: str
    definition: str = ""
    measurement: float | None = None
    units: str | None = None
    level: str = ""
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"suite": self.suite, "definition": self.definition or self.suite,
                                 "case": self.case, "result": self.result}
        if self.measurement is not None:
            entry["measurement"] = self.measurement
        if self.units:
            entry["units"] = self.units
        if self.level:
            entry["level"] = self.level
        if self.duration is not None:
            entry["duration"] = round(self.duration, 3)
        entry.update(self.extra)
        return entry


@dataclass
class JobContext:
    job: Job
    device: Device
    logger: JobLogger
    workdir: Path  # scratch space of this job on the worker
    output_dir: Path
    processes: ProcessRegistry
    cancel_requested: Callable[[], bool] = lambda: False
    multinode: MultinodeClient | None = None
    file_roots: list[Path] | None = None  # None: any local path readable by the user
    board_name: str = "local"
    job_id: str = "local"

    # Data that actions hand on to later actions.
    images: dict[str, Path] = field(default_factory=dict)  # downloaded files by image name
    overlay_tarball: Path | None = None
    overlay_dir: Path | None = None
    tftp_dir: Path | None = None  # per-job directory inside the TFTP tree
    tftp_names: dict[str, str] = field(default_factory=dict)  # image name -> path relative to the TFTP root
    nfs_root: Path | None = None
    connection: ShellConnection | None = None
    multinode_data: dict[str, dict[str, str]] = field(default_factory=dict)  # message id -> data received
    environment: dict[str, str] = field(default_factory=dict)  # exported to the test shell
    stage_tests: dict[int, list[StageTest]] = field(default_factory=dict)  # test stage -> its definitions
    overlay_drive: Path | None = None  # the overlay as a raw tar drive for a disk-image boot

    # Bookkeeping.
    results: list[TestCaseResult] = field(default_factory=list)
    durations: list[dict[str, Any]] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    started_actions: list[Action] = field(default_factory=list)
    current_action: Action | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    job_deadline: float | None = None
    protocol_hooks: list[Callable[[Action, JobContext], None]] = field(default_factory=list)
    after_hooks: list[Callable[[Action, JobContext], None]] = field(default_factory=list)
    # Answers a Multinode API call seen on the console: (request, arguments) -> reply line.
    multinode_handler: Callable[[str, str], str] | None = None
    bootloader_commands: list[str] = field(default_factory=list)
    file_server: FileServer | None = None  # hands files to the board over HTTP (secondary media)

    def board_root(self) -> Path:
        """The root directory of a board that is a local shell on the dispatcher."""
        return self.workdir / "board"

    def require_connection(self) -> ShellConnection:
        if self.connection is None or not self.connection.alive():
            raise InfrastructureError("no connection to the board (it is off or its console closed)")
        return self.connection

    def close_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def device_command(self, command: str) -> str:
        """A device command with this job's places substituted."""
        return (command.replace("{BOARD_ROOT}", str(self.board_root()))
                .replace("{WORKDIR}", str(self.workdir))
                .replace("{BOARD}", self.board_name))

    def nfs_export_path(self) -> str:
        """The NFS root as the board mounts it (the server exports the nfs_root tree)."""
        from pipeline.actions.deploy import nfs_export_root

        prefix = str(self.device.parameters.get("nfs_export_prefix", nfs_export_root(self.device)))
        return f"{prefix.rstrip('/')}/{self.nfs_root.relative_to(nfs_export_root(self.device))}"

    def uboot_ramdisk_has_header(self) -> bool:
        ramdisk = self.images.get("ramdisk")
        if ramdisk is None or not ramdisk.exists():
            return False
        with open(ramdisk, "rb") as handle:
            return handle.read(4) == b"\x27\x05\x19\x56"

    def multinode_request(self, request: str, arguments: str) -> None:
        """A lava-send/-wait/-sync line from the test shell: answer it on the console."""
        if self.multinode_handler is None:
            raise TestError(f"lava-{request.lower().replace('_', '-')}: this job is not a multinode job")
        reply = self.multinode_handler(request, arguments)
        self.require_connection().sendline(reply)

    def serve_file(self, path: Path) -> str:
        """A URL the board can fetch ``path`` from (the device says how it reaches the dispatcher)."""
        host = self.device.parameters.get("dispatcher_ip")
        if not host:
            raise ConfigurationError("the device has no parameters.dispatcher_ip: the board cannot fetch "
                                     "files from the dispatcher")
        if self.file_server is None:
            from pipeline.fileserver import FileServer  # http.server costs 40 ms at start-up: only when used

            self.file_server = FileServer(str(self.device.parameters.get("file_server_bind", "127.0.0.1")))
        return self.file_server.publish(path, str(host))

    def close_file_server(self) -> None:
        if self.file_server is not None:
            self.file_server.close()
            self.file_server = None

    def check(self) -> None:
        """Raise if the job was cancelled or a deadline passed."""
        if self.cancel_requested():
            raise Canceled("the job was canceled")
        error = self.deadlines.expired_error()
        if error is not None:
            raise error

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left before the nearest deadline (at most ``cap``)."""
        left = self.deadlines.remaining()
        values = [v for v in (left, cap) if v is not None]
        return max(0.0, min(values)) if values else 3600.0 * 24

    @contextmanager
    def deadline(self, when: float | None, action: Action | None) -> Iterator[None]:
        with self.deadlines.push(when, action, ActionTimeout):
            yield

    @contextmanager
    def job_timer(self, seconds: float) -> Iterator[None]:
        if self.job_deadline is None:
            self.job_deadline = time.monotonic() + seconds
        with self.deadlines.push(self.job_deadline, None, JobTimeout):
            yield

    def protocol_calls(self, action: Action) -> None:
        """Protocol calls (Multinode) made at the start of an action's run step."""
        for hook in self.protocol_hooks:
            hook(action, self)

    def protocol_calls_after(self, action: Action) -> None:
        """Protocol calls made when an action's run step has succeeded (lava-start)."""
        for hook in self.after_hooks:
            hook(action, self)

    def record_duration(self, action: Action) -> None:
        self.durations.append({"level": action.level, "name": action.name,
                               "duration": round(action.duration or 0.0, 3), "result": action.result})

    def count_retry(self, name: str) -> None:
        self.retries[name] = self.retries.get(name, 0) + 1

    def add_result(self, result: TestCaseResult) -> None:
        self.results.append(result)
        self.logger.results(result.as_dict())
