"""The per-job context: what actions share while a job runs.

Data passes between actions through typed attributes here, not a
free-form dictionary: a deploy's actions fill ``deployment`` (a
pipeline.deployment.Deployment), the boot's actions read it. The context
knows the actions only as Steps (name, level, timing): pipeline.action
builds on the context, not the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.deadlines import Deadlines, Timed
from pipeline.errors import (
    ActionTimeout,
    Bug,
    Canceled,
    ConfigurationError,
    InfrastructureError,
    JobError,
    JobTimeout,
    TestError,
)
from pipeline.log import JobLogger

if TYPE_CHECKING:
    from pipeline.connection import ShellConnection
    from pipeline.coordination import MultinodeClient
    from pipeline.deployment import Deployment
    from pipeline.device import Device
    from pipeline.fileserver import FileServer
    from pipeline.job import Job
    from pipeline.overlay import StageTest
    from pipeline.processes import ProcessRegistry


class Step(Protocol):
    """An action as the context records it (pipeline.action.Action is one)."""

    @property
    def name(self) -> str: ...

    @property
    def level(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def duration(self) -> float | None: ...

    @property
    def result(self) -> str | None: ...

    @property
    def parent(self) -> Step | None: ...


Hook = Callable[[Step, "JobContext"], None]


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
    deployment: Deployment | None = None  # what the last deploy prepared for the boot after it
    overlay_tarball: Path | None = None  # the LAVA overlay, packed (kept with the job's output)
    overlay_dir: Path | None = None  # the LAVA overlay's files on the dispatcher
    stage_tests: dict[int, list[StageTest]] = field(default_factory=dict)  # test stage -> its definitions
    connection: ShellConnection | None = None
    environment: dict[str, str] = field(default_factory=dict)  # exported to the test shell
    bootloader_commands: list[str] = field(default_factory=list)  # substituted, for the bootloader to run

    # Bookkeeping.
    results: list[TestCaseResult] = field(default_factory=list)
    durations: list[dict[str, Any]] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    started_actions: list[Step] = field(default_factory=list)
    deadlines: Deadlines = field(default_factory=Deadlines)
    job_deadline: float | None = None
    protocol_hooks: list[Hook] = field(default_factory=list)
    after_hooks: list[Hook] = field(default_factory=list)
    ended_hooks: list[Hook] = field(default_factory=list)  # each action once it has ended, passed or failed
    # Answers a Multinode API call seen on the console: (request, arguments) -> reply line.
    multinode_handler: Callable[[str, str], str] | None = None
    file_server: FileServer | None = None  # hands files to the board over HTTP (secondary media)

    def board_root(self) -> Path:
        """The root directory of a board that is a local shell on the dispatcher."""
        return self.workdir / "board"

    def deployed(self) -> Deployment:
        """The deployment the running deploy fills, or the last one (its top action started it)."""
        if self.deployment is None:
            raise Bug("no deploy action has started a deployment")
        return self.deployment

    def overlay_files(self) -> tuple[Path, Path]:
        """(the overlay tarball, its files on the dispatcher), once a lava-overlay action prepared them."""
        if self.overlay_tarball is None or self.overlay_dir is None:
            raise JobError("no overlay was prepared for the test actions")
        return self.overlay_tarball, self.overlay_dir

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
    def deadline(self, when: float | None, action: Timed | None) -> Iterator[None]:
        with self.deadlines.push(when, action, ActionTimeout):
            yield

    @contextmanager
    def job_timer(self, seconds: float) -> Iterator[None]:
        if self.job_deadline is None:
            self.job_deadline = time.monotonic() + seconds
        with self.deadlines.push(self.job_deadline, None, JobTimeout):
            yield

    def protocol_calls(self, action: Step) -> None:
        """Protocol calls (Multinode) made at the start of an action's run step."""
        for hook in self.protocol_hooks:
            hook(action, self)

    def protocol_calls_after(self, action: Step) -> None:
        """Protocol calls made when an action's run step has succeeded (lava-start)."""
        for hook in self.after_hooks:
            hook(action, self)

    def record_duration(self, action: Step) -> None:
        self.durations.append({"level": action.level, "name": action.name,
                               "duration": round(action.duration or 0.0, 3), "result": action.result})
        for hook in self.ended_hooks:
            hook(action, self)

    def count_retry(self, name: str) -> None:
        self.retries[name] = self.retries.get(name, 0) + 1

    def add_result(self, result: TestCaseResult) -> None:
        self.results.append(result)
        self.logger.results(result.as_dict())
