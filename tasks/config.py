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
``LAVA_DISPATCH_LEASE_SECONDS``
    How long a running job survives without its worker's heartbeat (default
    15; the heartbeat runs every ``lease / 6`` seconds, at most every 2 s).
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SSL_QUERY_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "cert_required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
             "cert_optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE, "cert_none": ssl.CERT_NONE}


def _root_user() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class ConfigError(ValueError):
    """A setting of the environment that cannot be used (the message names the variable)."""


def redis_url() -> str:
    return os.environ.get("LAVA_DISPATCH_REDIS_URL") or DEFAULT_REDIS_URL


@dataclass(frozen=True)
class RedisTarget:
    """The Redis URL without TLS query parameters, and the TLS options (None: no TLS)."""

    url: str
    ssl: dict[str, Any] | None

    def redacted(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, ""))


def redis_target(url: str | None = None) -> RedisTarget:
    """Split TLS options off the URL so Celery, kombu and redis-py get the same ones."""
    url = url or redis_url()
    parts = urlsplit(url)
    # Only the scheme is shown: the URL may hold a password.
    if parts.scheme not in ("redis", "rediss", "unix") or not url.startswith(parts.scheme + "://"):
        head = url.split("://", 1)[0] if "://" in url else ""
        shown = head and len(head) <= 20 and "@" not in head
        found = f"not {head}://" if shown else "it has no scheme such as redis://"
        raise ConfigError(f"LAVA_DISPATCH_REDIS_URL must start with redis://, rediss:// (TLS) or unix:// ({found})")
    try:
        parts.port
    except ValueError:
        raise ConfigError("LAVA_DISPATCH_REDIS_URL: the port is not a number from 0 to 65535") from None
    query = dict(parse_qsl(parts.query))
    if parts.scheme != "rediss":
        return RedisTarget(url, None)
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    reqs = query.pop("ssl_cert_reqs", None)
    if reqs is not None:
        key = reqs.lower()
        if key not in CERT_REQS:
            raise ConfigError(f"LAVA_DISPATCH_REDIS_URL: ssl_cert_reqs={reqs!r}: use required, optional or none")
        options["ssl_cert_reqs"] = CERT_REQS[key]
    for name, env in (("ssl_ca_certs", "LAVA_DISPATCH_REDIS_CA"), ("ssl_certfile", "LAVA_DISPATCH_REDIS_CERT"),
                      ("ssl_keyfile", "LAVA_DISPATCH_REDIS_KEY")):
        value = query.pop(name, None) or os.environ.get(env)
        if value:
            options[name] = value
    query.pop("ssl_check_hostname", None)
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return RedisTarget(clean, options)


def redis_client(url: str | None = None, **kwargs: Any):
    """A redis-py client for the lab database (decoded strings, bounded timeouts and retries)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    target = redis_target(url)
    options: dict[str, Any] = dict(decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                   socket_keepalive=True, health_check_interval=15,
                                   retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 4),
                                   retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                                   client_name=f"lava-dispatch-{os.getpid()}")
    if target.ssl:
        options.update(target.ssl)
    options.update(kwargs)
    return redis.Redis.from_url(target.url, **options)


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


def hostname() -> str:
    return socket.gethostname()


def boot_id() -> str:
    """Identifies this boot of this host: process ids recorded before a reboot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
