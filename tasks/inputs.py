"""Reading the files a command is given (a job, a device, a dispatcher configuration), and usage errors."""

from __future__ import annotations

import os
import stat

from pipeline.errors import ProblemList, YamlRejected
from pipeline.yamlload import MAX_BYTES_ENV, max_bytes_from_env


class UsageError(Exception):
    """A usage mistake: exit 2."""


def read_file(path: str, what: str) -> str:
    """A regular file's text, at most the job size limit: a FIFO or a device never hangs or floods us."""
    try:
        limit = max_bytes_from_env()
    except YamlRejected as exc:
        raise UsageError(exc.problems[0]) from None
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise UsageError(f"{what} file {path!r} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path!r}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} file {path!r} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ProblemList([f"({what}): the file is larger than the limit of {limit} bytes ({MAX_BYTES_ENV})"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {what} file {path!r}: not UTF-8 text "
                         f"({exc.reason} at byte {exc.start})") from None


__all__ = ["UsageError", "read_file"]
