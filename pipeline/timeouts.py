"""Durations and the one rule that decides every action's timeout.

Durations are written as a mapping of days/hours/minutes/seconds (any
unspecified unit is zero) or in the short form used by the specification's
panda example (``2m``, ``90s``, ``1h30m``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.checks import shown

DEFAULT_ACTION_TIMEOUT = 30.0
DEFAULT_CONNECTION_TIMEOUT = 30.0
UNIT_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
SHORT_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
SHORT_FORM = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# Longer is a mistake, and far larger numbers overflow the timers that wait on it.
MAX_DURATION = 365 * 86400
MAX_DURATION_TEXT = "365 days"


def parse_duration(value: Any) -> float:
    """Return seconds for a duration mapping or short string; ValueError if malformed or out of range."""
    total: float  # whole numbers stay integers until the range is checked
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        match = SHORT_FORM.match(text) if len(text) <= 40 else None
        if not text or not match or not any(match.groups()):
            raise ValueError(f"{shown(value)} is not a duration (use e.g. '2m', '90s', '1h30m')")
        total = sum(int(n) * mult for n, mult in zip(match.groups(), SHORT_UNITS.values(), strict=True) if n)
    elif isinstance(value, Mapping):
        if not value:
            raise ValueError("a duration needs at least one of days, hours, minutes, seconds")
        total = 0
        for unit, amount in value.items():
            if unit == "skip" and isinstance(amount, bool) and len(value) > 1:
                continue  # LAVA's ``skip: true`` (go on with the job after this timeout): see README, Timeouts
            if unit not in UNIT_SECONDS:
                raise ValueError(f"unknown unit {shown(unit)} (use days, hours, minutes, seconds)")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0:  # NaN fails too
                raise ValueError(f"{unit}: {shown(amount)} is not a non-negative number")
            if amount > MAX_DURATION:  # before multiplying: a huge integer never reaches float()
                raise ValueError(f"{unit}: {shown(amount)} is more than {MAX_DURATION_TEXT}")
            total += amount * UNIT_SECONDS[unit]
    else:
        raise ValueError(f"expected a duration mapping (minutes: 2) or a string ('2m'), got {shown(value)}")
    if total > MAX_DURATION:
        raise ValueError(f"{float(total):g} s is more than {MAX_DURATION_TEXT}")
    return float(total)


@dataclass(frozen=True)
class TimeoutSources:
    """Everything that can set an action's timeout, lowest priority first.

    Each field holds durations in seconds, already parsed.
    """

    device_action: float | None = None
    job_action: float | None = None
    device_named: Mapping[str, float] | None = None
    job_named: Mapping[str, float] | None = None
    block_kind_default: float | None = None  # the job's ``timeouts.<deploy|boot|test>``
    block: float | None = None  # the action block's ``timeout``
    block_named: Mapping[str, float] | None = None  # the block's ``timeouts: {name: ..}``

    def effective(self, names: tuple[str, ...], default: float = DEFAULT_ACTION_TIMEOUT,
                  retry_share: float | None = None) -> tuple[float, str]:
        """Return (seconds, which setting decided it) for an action known by ``names``.

        The order is LAVA's (2026.07), later winning: the default, the
        device's then the job's general value, the device's value for this
        action name, the job's value for the block's type, the block's
        timeout, the share of a retrying parent's timeout (``retry_share``:
        since LAVA 2025.02 the attempts of a retry share its timeout), the
        job's value for this action name (since LAVA 2025.06 it beats the
        block's timeout), the block's value for this action name.
        """
        seconds, source = default, "default"
        for value, label in (
            (self.device_action, "device timeouts.action"),
            (self.job_action, "job timeouts.action"),
            (_named(self.device_named, names), "device timeouts.actions"),
            (self.block_kind_default, "job timeouts for the block type"),
            (self.block, "block timeout"),
            (retry_share, "share of the retry's timeout"),
            (_named(self.job_named, names), "job timeouts.actions"),
            (_named(self.block_named, names), "block timeouts"),
        ):
            if value is not None:
                seconds, source = value, label
        return seconds, source


def retry_share(timeout: float, attempts: int) -> float | None:
    """Each attempt's part of a retry's timeout (LAVA: whole seconds); None for a single attempt."""
    return float(timeout // attempts) if attempts > 1 else None


def _named(table: Mapping[str, float] | None, names: tuple[str, ...]) -> float | None:
    if not table:
        return None
    for name in names:
        if name in table:
            return table[name]
    return None


def connection_timeout(
    names: tuple[str, ...],
    device_default: float | None,
    job_default: float | None,
    device_named: Mapping[str, float] | None,
    job_named: Mapping[str, float] | None,
) -> float:
    """The per-operation timeout on a connection, same precedence as actions."""
    seconds = DEFAULT_CONNECTION_TIMEOUT
    for value in (device_default, job_default, _named(device_named, names), _named(job_named, names)):
        if value is not None:
            seconds = value
    return seconds
