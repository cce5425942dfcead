"""Every error class of the engine, in one place.

The type of an error decides what happens next: a job whose files are
wrong is rejected before anything runs (ProblemList); once it runs,
RetryAction retries on JobError and InfrastructureError only (never on a
timeout of the whole job or a cancel), and every result records the
``error_type`` of what ended the job.

Hierarchy::

    Exception
     +-- LavaError                  error_type "Unknown": raised on purpose while a job runs
     |    +-- JobError              "Job": the job is wrong (a parameter, a file, a checksum)
     |    |    +-- ActionTimeout    an action, or one operation on a connection, ran out of time
     |    |    +-- CorruptData      a compressed download or archive is damaged
     |    +-- JobTimeout            "Job": the whole job ran out of time (never retried)
     |    +-- InfrastructureError   "Infrastructure": the lab failed (a server, a board, a worker)
     |    +-- TestError             "Test": the test could not be run as asked
     |    +-- ConfigurationError    "Configuration": the device configuration is wrong
     |    +-- Canceled              "Canceled": a user cancelled the job
     |    +-- Bug                   "Bug": the dispatcher itself is wrong
     |         +-- RegistryError    two methods registered under one name, an unknown kind
     +-- ProblemList                a rejected job, device or configuration: every problem, each with its place
     +-- YamlRejected               a YAML file refused by the bounded loader (its problems, with places)
     +-- RenderError                a device dictionary's template did not render (its problems)
     +-- ValueError
          +-- ValidationError       every problem of one value checked by a typed model (pipeline.schema)

ProblemList, YamlRejected, RenderError and ValidationError are found before
a job runs and never reach a result: the callers turn them into the lines
``lava-dispatch validate`` prints.
"""

from __future__ import annotations

from typing import Any


class LavaError(Exception):
    """Base of every error the engine raises on purpose."""

    error_type = "Unknown"


class JobError(LavaError):
    """The job is wrong: bad parameters, a file that does not exist, ..."""

    error_type = "Job"


class ActionTimeout(JobError):
    """An action (or one operation on a connection) ran out of time."""


class CorruptData(JobError):
    """The bytes are not valid data of their compression; ``detail`` says how, without ``what``."""

    def __init__(self, what: str, detail: str):
        super().__init__(f"{what}: {detail}")
        self.detail = detail


class JobTimeout(LavaError):
    """The whole job ran out of time: never retried."""

    error_type = "Job"


class InfrastructureError(LavaError):
    """The lab failed: a download server, a board, a worker."""

    error_type = "Infrastructure"


class TestError(LavaError):
    """The test could not be run as asked."""

    __test__ = False  # not a pytest test class
    error_type = "Test"


class ConfigurationError(LavaError):
    """The device configuration is wrong."""

    error_type = "Configuration"


class Canceled(LavaError):
    """The job was cancelled by a user."""

    error_type = "Canceled"


class Bug(LavaError):
    """The dispatcher itself is wrong."""

    error_type = "Bug"


class RegistryError(Bug):
    """A method, model or strategy registered twice under one name, or under a kind the engine lacks."""


class ProblemList(Exception):
    """A rejected job: every problem, each naming its place."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class YamlRejected(Exception):
    """The text is not a document we load: every problem, each naming its place."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class RenderError(Exception):
    """The dictionary cannot be rendered: ``problems`` says why, each line naming its place."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class ValidationError(ValueError):
    """Every problem found in one value; ``errors()`` gives dicts with loc, msg and type."""

    def __init__(self, title: str, errors: list[dict[str, Any]]):
        self.title = title
        self._errors = errors
        lines = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errors]
        super().__init__(f"{title}: " + "; ".join(lines))

    def errors(self) -> list[dict[str, Any]]:
        return list(self._errors)
