"""The lab's Redis behind Redis Sentinel: the ``redis+sentinel://`` URL and what it means for each client.

``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB][?wait=N&wait_ms=MS]``

- ``HOST:PORT``: the sentinels (port default 26379); ask any of them.
- ``MASTER``: the name the sentinels monitor (``sentinel monitor MASTER ...``).
- ``DB``: the database number (default 0).
- ``USER``/``PASSWORD``: the credentials of the data nodes (primary and
  replicas). The sentinels' own password, if they have one
  (``requirepass`` in sentinel.conf), is ``LAVA_DISPATCH_SENTINEL_PASSWORD``.
- ``wait`` (default 1) and ``wait_ms`` (default 1000): after each write that
  must not be lost in a failover (a job's submission, its end, a cancel),
  the lab sends ``WAIT wait wait_ms``: it waits until that many replicas
  have the write, or the time is up. ``wait=0`` turns it off.

Celery and kombu take the same place as ``sentinel://HOST:PORT/DB;sentinel://...``
with the master's name in ``broker_transport_options`` and
``result_backend_transport_options`` (``master_name``); :meth:`SentinelSpec.celery_url`
and :meth:`SentinelSpec.transport_options` build them. redis-py's
``Sentinel(...).master_for(MASTER)`` gives the lab's own client: it asks a
sentinel for the primary's address whenever it (re)connects, and drops a
connection to a primary that was demoted (``READONLY``).

Importing this module does not import redis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
PASSWORD_VARIABLE = "LAVA_DISPATCH_SENTINEL_PASSWORD"
_VARIABLE = "LAVA_DISPATCH_REDIS_URL"
_FORM = f"{SCHEME}://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]"


class SentinelURLError(ValueError):
    """A ``redis+sentinel://`` URL that cannot be used (the message names the variable, never the password)."""


@dataclass(frozen=True)
class SentinelSpec:
    """What a ``redis+sentinel://`` URL says."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    wait_replicas: int = 1
    wait_ms: int = 1000

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Options of the connections to the sentinels themselves (their password, bounded timeouts)."""
        options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        password = os.environ.get(PASSWORD_VARIABLE)
        if password:
            options["password"] = password
        return options

    def celery_url(self) -> str:
        """kombu's and Celery's form: one ``sentinel://`` URL per sentinel, ``;`` between them."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return ";".join(f"sentinel://{auth}{_host(host)}:{port}/{self.db}" for host, port in self.hosts)

    def transport_options(self) -> dict[str, Any]:
        """What kombu's broker and Celery's result backend need besides the URL."""
        return {"master_name": self.master, "sentinel_kwargs": self.sentinel_kwargs()}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_host(item: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise SentinelURLError(f"{_VARIABLE}: a sentinel address has no host (the form is {_FORM})")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SentinelURLError(f"{_VARIABLE}: the sentinel port of {host} is not a number from 1 to 65535")
    return host, int(port_text)


def _int_option(query: dict[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise SentinelURLError(f"{_VARIABLE}: {name}={value!r} is not a whole number")
    return int(value)


def parse_sentinel_url(url: str) -> SentinelSpec:
    """Read a ``redis+sentinel://`` URL; a bad one is a :class:`SentinelURLError` that never shows the password."""
    rest = url[len(SCHEME) + 3:]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts = tuple(_split_host(item) for item in netloc.split(",") if item)
    if not hosts:
        raise SentinelURLError(f"{_VARIABLE}: no sentinel address (the form is {_FORM})")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise SentinelURLError(f"{_VARIABLE}: no master name after the sentinels (the form is {_FORM})")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise SentinelURLError(f"{_VARIABLE}: after the sentinels comes /MASTER or /MASTER/DB with DB a number "
                               f"(the form is {_FORM})")
    query = dict(parse_qsl(query_text))
    unknown = sorted(set(query) - {"wait", "wait_ms"})
    if unknown:
        raise SentinelURLError(f"{_VARIABLE}: unknown option {unknown[0]!r} (a redis+sentinel:// URL takes "
                               f"wait and wait_ms)")
    return SentinelSpec(hosts, parts[0], int(parts[1]) if len(parts) == 2 else 0, username, password,
                        _int_option(query, "wait", 1), _int_option(query, "wait_ms", 1000))


def sentinel_client(spec: SentinelSpec, options: dict[str, Any]) -> Any:
    """A redis-py client of the current primary (``options``: the lab's connection options)."""
    from redis.sentinel import Sentinel

    connection = {k: v for k, v in options.items() if k not in ("username", "password", "db")}
    sentinel = Sentinel(list(spec.hosts), sentinel_kwargs=spec.sentinel_kwargs(),  # type: ignore[no-untyped-call]
                        **connection)
    return sentinel.master_for(spec.master, db=spec.db,  # type: ignore[no-untyped-call]
                               username=spec.username, password=spec.password)


__all__ = ["DEFAULT_SENTINEL_PORT", "PASSWORD_VARIABLE", "SCHEME", "SentinelSpec", "SentinelURLError",
           "parse_sentinel_url", "sentinel_client"]
