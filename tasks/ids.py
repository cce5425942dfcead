"""Job ids, and the paths built from them.

The lab assigns every job its id, as LAVA does: an integer from one Redis
counter (``INCR lava:{lab}:last_id``, ``tasks.state.LabState.new_id``). The
members of a multinode group ``N`` are ``N.0``, ``N.1``, ...; the group's
own records use ``N``. Nothing a client chooses (a Celery task id, a CLI
argument) becomes a Redis key or a path unless it has this form
(``tasks.keys`` builds job and group keys only from checked ids), and every
per-job path is checked to stay under its root, so a job id can never name
another job's keys or a directory outside the lab's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

JOB_ID = re.compile(r"^\d+(\.\d+)?$", re.ASCII)  # ASCII: "\d" would also take other scripts' digits
MAX_ID_LENGTH = 40  # far beyond any counter value; bounds what a key built from an id can be


class InvalidJobId(ValueError):
    """Text that is not a job id (the message says what one looks like)."""


def _text(value: Any) -> str:
    # bool is an int in Python, but `true` is not an id
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidJobId(f"a job id is a number such as 42 (or 42.1, a member of multinode group 42), "
                           f"not {type(value).__name__} {value!r}"[:200])
    return str(value)


def check_job_id(value: Any) -> str:
    """The job id ``value`` names (a string or a number), or InvalidJobId.

    Leading zeros are dropped (``007`` is job 7), so one job has one key.
    """
    text = _text(value)
    if len(text) > MAX_ID_LENGTH or not JOB_ID.fullmatch(text):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidJobId(f"{shown!r} is not a job id: job ids are numbers such as 42 "
                           "(42.1 for a member of multinode group 42)")
    return ".".join(str(int(part)) for part in text.split("."))


def is_job_id(value: Any) -> bool:
    """``value`` is a job id exactly as the lab writes it (no normalising: for keys built from it)."""
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and JOB_ID.fullmatch(value) is not None \
        and value == ".".join(str(int(part)) for part in value.split("."))


def require_job_id(value: Any) -> str:
    """``value`` itself if it is a job id as the lab writes it, else InvalidJobId (before it goes into a key)."""
    if not is_job_id(value):
        check_job_id(value)  # the message for a malformed id
        raise InvalidJobId(f"{value!r} is not written as the lab writes job ids (no leading zeros)")
    return str(value)


def require_group_id(value: Any) -> str:
    if not is_group_id(value):
        raise InvalidJobId(f"{value!r} is not a multinode group id (a number such as 42)")
    return str(value)


def is_group_id(value: Any) -> bool:
    """An id of a group's form (``N``, not a member's ``N.i``), as the lab writes it."""
    return is_job_id(value) and "." not in value


def member_id(group_id: str, index: int) -> str:
    return f"{require_group_id(group_id)}.{int(index)}"


class PathOutsideRoot(ValueError):
    """A path built from job data would leave its root."""


def path_under(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refused unless it is strictly inside ``root`` (resolved too).

    Every per-job path (output directory, scratch directory) is built here:
    an absolute part, ``..`` or a symbolic link out of the root is refused,
    never followed.
    """
    base = Path(root).expanduser().resolve()
    candidate = base.joinpath(*parts).resolve()
    if candidate == base or base not in candidate.parents:
        raise PathOutsideRoot(f"{'/'.join(parts)!r} is not a directory inside {base}")
    return candidate


def job_dir(root: Path, job_id: str) -> Path:
    """The directory of job ``job_id`` under ``root`` (``<root>/<job id>``)."""
    return path_under(root, require_job_id(job_id))


__all__ = ["InvalidJobId", "PathOutsideRoot", "check_job_id", "require_job_id", "require_group_id", "is_job_id",
           "is_group_id", "member_id", "path_under", "job_dir"]
