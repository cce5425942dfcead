"""The lab's Redis connection: the URL, its TLS options and the client, in one place.

Celery and kombu (``tasks.app``), the scheduler, the workers, the CLI and the
Multinode coordinator all reach Redis through :func:`redis_target` (what to
connect to, with which TLS options) and :func:`redis_client` (a redis-py
client with bounded timeouts and retries), so a setting that works for one
works for all.

``LAVA_DISPATCH_REDIS_URL``
    ``redis://[[USER]:PASSWORD@]HOST:PORT/DB``, ``rediss://...`` for TLS, or
    ``unix://[[USER]:PASSWORD@]PATH?db=DB``, or
    ``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]``
    for a primary watched by Redis Sentinel (:mod:`coordinator.sentinel`);
    default ``redis://127.0.0.1:6379/0``. Anything else is a
    :class:`ConfigError` naming the variable.
``LAVA_DISPATCH_REDIS_CA``, ``LAVA_DISPATCH_REDIS_CERT``, ``LAVA_DISPATCH_REDIS_KEY``
    ``rediss://`` only: the CA bundle that signed the server's certificate
    (default: the system's trust store), and a client certificate and its key
    for a server that asks for one (``tls-auth-clients yes``). The URL's
    query keys ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
    ``ssl_cert_reqs`` (``required``, ``optional``, ``none``) take precedence.
    The server's certificate is verified unless ``ssl_cert_reqs=none``.

Importing this module does not import redis (the CLI's start-up time).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from coordinator.sentinel import SCHEME as SENTINEL_SCHEME
from coordinator.sentinel import SentinelSpec, SentinelURLError, parse_sentinel_url, sentinel_client

if TYPE_CHECKING:
    import redis

__all__ = [
    "CERT_REQS",
    "DEFAULT_REDIS_URL",
    "SSL_QUERY_KEYS",
    "URL_VARIABLE",
    "ConfigError",
    "RedisTarget",
    "redact",
    "redis_client",
    "redis_target",
    "redis_url",
]

URL_VARIABLE = "LAVA_DISPATCH_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SCHEMES = ("redis", "rediss", "unix")
SSL_QUERY_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "cert_required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
             "cert_optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE, "cert_none": ssl.CERT_NONE}
# URL query key -> the environment variable that gives it otherwise.
_TLS_FILES = (("ssl_ca_certs", "LAVA_DISPATCH_REDIS_CA"), ("ssl_certfile", "LAVA_DISPATCH_REDIS_CERT"),
              ("ssl_keyfile", "LAVA_DISPATCH_REDIS_KEY"))


class ConfigError(ValueError):
    """A setting of the environment that cannot be used (the message names the variable)."""


def redis_url() -> str:
    """``LAVA_DISPATCH_REDIS_URL``, or the default."""
    return os.environ.get(URL_VARIABLE) or DEFAULT_REDIS_URL


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{netloc}", parts.path, parts.query,
                       parts.fragment))


@dataclass(frozen=True)
class RedisTarget:
    """The Redis URL without TLS query parameters, and the TLS options (None: no TLS).

    ``ssl`` holds redis-py's keyword arguments (``ssl_cert_reqs``,
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``); Celery's
    ``broker_use_ssl`` takes the same dictionary.
    """

    url: str
    ssl: dict[str, Any] | None
    sentinel: SentinelSpec | None = None  # a redis+sentinel:// URL: the sentinels and the master's name

    def redacted(self) -> str:
        return redact(self.url)

    @property
    def celery_url(self) -> str:
        """The broker and result backend URL in Celery's form (``sentinel://...;sentinel://...`` for Sentinel)."""
        return self.sentinel.celery_url() if self.sentinel else self.url

    def transport_options(self) -> dict[str, Any]:
        """What Celery's broker and result backend need besides the URL (the master's name for Sentinel)."""
        return self.sentinel.transport_options() if self.sentinel else {}


def redis_target(url: str | None = None) -> RedisTarget:
    """Check ``url`` (default: :func:`redis_url`) and split its TLS options off.

    Raises :class:`ConfigError` naming ``LAVA_DISPATCH_REDIS_URL`` for a URL
    that is not ``redis://``, ``rediss://`` or ``unix://`` or has a bad port;
    only the scheme is ever shown, as the URL may hold a password.
    """
    url = url or redis_url()
    if url.startswith(SENTINEL_SCHEME + "://"):
        try:
            return RedisTarget(url, None, parse_sentinel_url(url))
        except SentinelURLError as exc:
            raise ConfigError(str(exc)) from None
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not url.startswith(parts.scheme + "://"):
        head = url.split("://", 1)[0] if "://" in url else ""
        shown = head and len(head) <= 20 and "@" not in head
        found = f"not {head}://" if shown else "it has no scheme such as redis://"
        raise ConfigError(f"{URL_VARIABLE} must start with redis://, rediss:// (TLS), unix:// or "
                          f"redis+sentinel:// ({found})")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ConfigError(f"{URL_VARIABLE}: the port is not a number from 0 to 65535") from None
    if parts.scheme != "rediss":
        return RedisTarget(url, None)
    query = dict(parse_qsl(parts.query))
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    reqs = query.pop("ssl_cert_reqs", None)
    if reqs is not None:
        if reqs.lower() not in CERT_REQS:
            raise ConfigError(f"{URL_VARIABLE}: ssl_cert_reqs={reqs!r}: use required, optional or none")
        options["ssl_cert_reqs"] = CERT_REQS[reqs.lower()]
    for name, env in _TLS_FILES:
        value = query.pop(name, None) or os.environ.get(env)
        if value:
            options[name] = value
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ConfigError("LAVA_DISPATCH_REDIS_KEY (ssl_keyfile) is set but LAVA_DISPATCH_REDIS_CERT "
                          "(ssl_certfile) is not: a client key needs its certificate")
    # The host name is always checked when the certificate is (redis-py's default).
    query.pop("ssl_check_hostname", None)
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return RedisTarget(clean, options)


def redis_client(url: str | None = None, **overrides: Any) -> redis.Redis:
    """A redis-py client for ``url`` (default: the lab's): TLS options applied, strings decoded.

    Timeouts and retries are bounded: a command waits at most
    ``socket_timeout`` (10 s) for its answer, a connection ``socket_connect_timeout``
    (5 s), and a command that failed on a broken connection is sent again up
    to 4 times with a backoff of at most 1 s (every caller's commands are
    idempotent or guarded by a token). ``overrides`` replace any of these
    redis-py options (for example ``socket_timeout`` for a longer blocking
    read, or ``retry=None``).
    """
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
    options.update(overrides)
    if target.sentinel:
        client: redis.Redis = sentinel_client(target.sentinel, options)
        return client
    return redis.Redis.from_url(target.url, **options)
