"""Multinode groups in the lab: the group's coordinator, its members, its end.

A group ``N`` (record ``lava:{group:N}:record``) has member jobs ``N.0``,
``N.1``, ...; its coordination (messages, barriers) lives in the
coordinator's keys ``lava:mn:{N}:*``, which expire once every member ended.
"""

from __future__ import annotations

import json
from typing import Any

from tasks import config
from tasks.ids import is_group_id
from tasks.keys import FINAL_STATES, GroupState, group_key, job_key
from tasks.state import LabState


def coordinator(lab: LabState) -> Any:
    """The Multinode coordinator of this lab (the same Redis)."""
    from coordinator import RedisCoordinator

    if lab._coordinator is None:
        lab._coordinator = RedisCoordinator(lab.url, group_ttl=max(lab.keep_s, 3600),
                                            end_ttl=config.group_end_seconds())
    return lab._coordinator


def group_members(lab: LabState, group_id: str) -> dict[str, str]:
    """sub-job id -> role of a group's members ({} if ``group_id`` is not a group)."""
    if not is_group_id(group_id):
        return {}
    raw = lab.r.hget(group_key(group_id), "members")
    members: dict[str, str] = json.loads(raw) if raw else {}
    return members


def end_group_of(lab: LabState, job_id: str) -> None:
    group = lab.r.hget(job_key(job_id), "group")
    if group:
        end_group_if_done(lab, str(group))


def end_group_if_done(lab: LabState, group_id: str) -> bool:
    """Once every sub-job of a group has ended, end its coordinator group (its keys then expire)."""
    members = group_members(lab, group_id)
    states = [lab.r.hget(job_key(job), "state") for job in members]
    if not members or any(state not in FINAL_STATES for state in states):
        return False
    coordinator(lab).end_group(group_id)
    lab.r.hset(group_key(group_id), "state", GroupState.ENDED)
    lab.r.expire(group_key(group_id), lab.keep_s)
    return True


__all__ = ["coordinator", "group_members", "end_group_of", "end_group_if_done"]
