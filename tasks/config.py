"""Lab configuration from the environment, and the Redis client.

Nothing here imports Celery: the CLI's ``status``/``logs``/``cancel`` and the
scheduler use Redis directly.

Environment (all optional):

``LAVA_DISPATCH_REDIS_URL``
    Broker, result backend and lab database: ``redis://[:PASSWORD@]HOST:PORT/DB``
    or ``rediss://...`` for TLS, or ``unix://PATH`` (default
    ``redis://127.0.0.1:6379/0``); any other URL is a ConfigError naming the
    variable. A user name in the URL selects a Redis ACL user.
``LAVA_DISPATCH_REDIS_CA``
    CA bundle that signed the Redis server certificate (``rediss://`` only;
    default: the system's trust store). ``LAVA_DISPATCH_REDIS_CERT`` and
    ``LAVA_DISPATCH_REDIS_KEY`` give a client certificate when the server asks
    for one.
``LAVA_DISPATCH_OUTPUT_ROOT``
    Where a board worker writes each job's output directory
    (``<root>/<job id>``; default ``/var/lib/lava-dispatch/jobs`` for root,
    else ``~/.local/share/lava-dispatch/jobs``).
``LAVA_DISPATCH_STATE_DIR``
    Where a board worker keeps its helper process-group file and lock
    (default ``/run/lava-dispatch`` for root, else
    ``$XDG_RUNTIME_DIR/lava-dispatch`` or ``~/.local/state/lava-dispatch``).
``LAVA_DISPATCH_KEEP_DAYS``
    Days a finished job's record, log and results stay in Redis (default 14).
``LAVA_DISPATCH_HEALTH_CHECKS``
    The directory of the health checks: ``<device-type>.yaml`` (the job) and
    ``<device-type>.conf`` (its settings), read by each board's worker
    (default ``/etc/lava-dispatch/health-checks``).
``LAVA_DISPATCH_INFRA_ERRORS``
    Infrastructure errors in a row that set a board Bad (default 3; 0 never;
    a device type's ``.conf`` may say otherwise).
``LAVA_DISPATCH_LEASE_SECONDS``
    How long a running job survives without its worker's heartbeat (default
    15; the heartbeat runs every ``lease / 6`` seconds, at most every 2 s).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# The lab's Redis settings live with the coordinator's (one URL parser, one
# set of TLS options, one client factory); these names stay the lab's.
from coordinator.redis_client import (
    CERT_REQS,
    DEFAULT_REDIS_URL,
    SSL_QUERY_KEYS,
    ConfigError,
    RedisTarget,
    redis_client,
    redis_target,
    redis_url,
)


def _root_user() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def output_root() -> Path:
    value = os.environ.get("LAVA_DISPATCH_OUTPUT_ROOT")
    if value:
        return Path(value).expanduser()
    if _root_user():
        return Path("/var/lib/lava-dispatch/jobs")
    return Path.home() / ".local" / "share" / "lava-dispatch" / "jobs"


def state_dir() -> Path:
    value = os.environ.get("LAVA_DISPATCH_STATE_DIR")
    if value:
        return Path(value).expanduser()
    if _root_user():
        return Path("/run/lava-dispatch")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "lava-dispatch"
    return Path.home() / ".local" / "state" / "lava-dispatch"


def keep_seconds() -> int:
    return int(float(os.environ.get("LAVA_DISPATCH_KEEP_DAYS", "14")) * 86400)


def group_end_seconds() -> int:
    """How long a multinode group's coordination keys live after its last member ended."""
    return max(1, int(float(os.environ.get("LAVA_DISPATCH_GROUP_END_SECONDS", "60"))))


def lease_seconds() -> float:
    return max(1.0, float(os.environ.get("LAVA_DISPATCH_LEASE_SECONDS", "15")))


def heartbeat_seconds() -> float:
    return min(2.0, lease_seconds() / 6)


def health_checks_dir() -> Path:
    return Path(os.environ.get("LAVA_DISPATCH_HEALTH_CHECKS") or "/etc/lava-dispatch/health-checks").expanduser()


def infrastructure_error_limit() -> int:
    value = os.environ.get("LAVA_DISPATCH_INFRA_ERRORS", "").strip() or "3"
    try:
        return max(0, int(value))
    except ValueError:
        raise ConfigError(f"LAVA_DISPATCH_INFRA_ERRORS={value!r} is not a whole number") from None


def hostname() -> str:
    return socket.gethostname()


def node_name(board: str) -> str:
    """The Celery node name of a board's worker on this host."""
    return f"{board}@{hostname()}"


def boot_id() -> str:
    """Identifies this boot of this host: process ids recorded before a reboot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


__all__ = ["CERT_REQS", "DEFAULT_REDIS_URL", "SSL_QUERY_KEYS", "ConfigError", "RedisTarget", "redis_client",
           "redis_target", "redis_url", "output_root", "state_dir", "keep_seconds", "group_end_seconds",
           "lease_seconds", "heartbeat_seconds", "health_checks_dir",
           "infrastructure_error_limit", "hostname", "node_name", "boot_id"]
