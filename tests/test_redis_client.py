"""The lab's Redis URL, TLS options, redaction and client factory (coordinator.redis_client).

Pure unit tests: no client here connects. The real TLS handshake with a
client certificate is in test_redis_coordinator.py.
"""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
from conftest import ROOT

from coordinator.redis_client import ConfigError, RedisTarget, redact, redis_client, redis_target

TLS_ENV = ("LAVA_DISPATCH_REDIS_CA", "LAVA_DISPATCH_REDIS_CERT", "LAVA_DISPATCH_REDIS_KEY")


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch):
    for name in (*TLS_ENV, "LAVA_DISPATCH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "redis://:pw@h/1", "unix:///run/redis.sock?db=2",
                                 "redis://[::1]:6380/0"])
def test_plain_urls_are_kept(url):
    assert redis_target(url) == RedisTarget(url, None)


@pytest.mark.parametrize("url, found", [
    ("http://h:6379/0", "not http://"),
    ("redis:/h:6379/0", "it has no scheme such as redis://"),
    ("127.0.0.1:6379", "it has no scheme such as redis://"),
    ("htp://:s3cret@h/0", "not htp://"),
    ("s3cret@h://x", "it has no scheme such as redis://"),
])
def test_other_urls_are_a_config_error_naming_the_variable(url, found):
    with pytest.raises(ConfigError) as err:
        redis_target(url)
    assert isinstance(err.value, ValueError)
    assert str(err.value) == (f"LAVA_DISPATCH_REDIS_URL must start with redis://, rediss:// (TLS), unix:// or "
                              f"redis+sentinel:// ({found})")
    assert "s3cret" not in str(err.value)


def test_bad_port_and_default(monkeypatch):
    with pytest.raises(ConfigError, match="LAVA_DISPATCH_REDIS_URL: the port is not a number"):
        redis_target("redis://:pw@h:99999/0")
    assert redis_target().url == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_URL", "rediss://h:6380/3")
    assert redis_target().url == "rediss://h:6380/3"


def test_tls_options_from_the_environment_and_the_query(monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CA", "/etc/lava/ca.pem")
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CERT", "/etc/lava/client.pem")
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_KEY", "/etc/lava/client.key")
    target = redis_target("rediss://lava:pw@h:6380/0")
    assert target == RedisTarget("rediss://lava:pw@h:6380/0", {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/lava/ca.pem",
        "ssl_certfile": "/etc/lava/client.pem", "ssl_keyfile": "/etc/lava/client.key"})
    # The URL's query wins and leaves the URL; other query keys stay.
    target = redis_target("rediss://h/0?ssl_certfile=/q/c.pem&ssl_keyfile=/q/c.key&ssl_cert_reqs=none"
                          "&ssl_check_hostname=false&health_check_interval=3")
    assert target.url == "rediss://h/0?health_check_interval=3"
    assert target.ssl == {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/etc/lava/ca.pem",
                          "ssl_certfile": "/q/c.pem", "ssl_keyfile": "/q/c.key"}


def test_bad_tls_settings_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match=r"LAVA_DISPATCH_REDIS_URL: ssl_cert_reqs='maybe'"):
        redis_target("rediss://h/0?ssl_cert_reqs=maybe")
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_KEY", "/etc/lava/client.key")
    with pytest.raises(ConfigError, match="LAVA_DISPATCH_REDIS_KEY .* LAVA_DISPATCH_REDIS_CERT"):
        redis_target("rediss://h/0")
    assert redis_target("redis://h/0").ssl is None  # TLS settings concern rediss:// only


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://lava:s3cret@[::1]:6380/0?a=b", "rediss://lava:***@[::1]:6380/0?a=b"),
    ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redact(url, shown):
    assert redact(url) == shown == redis_target(url).redacted()


def test_client_options(monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CA", "/etc/lava/ca.pem")
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CERT", "/etc/lava/client.pem")
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_KEY", "/etc/lava/client.key")
    client = redis_client("rediss://:pw@h:6380/2")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == "/etc/lava/ca.pem" and kwargs["ssl_certfile"] == "/etc/lava/client.pem"
    assert kwargs["ssl_keyfile"] == "/etc/lava/client.key" and kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["socket_timeout"] == 10 and kwargs["socket_connect_timeout"] == 5 and kwargs["db"] == 2
    assert kwargs["decode_responses"] is True and kwargs["retry"] is not None
    short = redis_client("redis://h/0", socket_timeout=2, socket_connect_timeout=2, retry=None)
    kwargs = short.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2 and kwargs["socket_connect_timeout"] == 2
    assert "ssl_certfile" not in kwargs
    with pytest.raises(ConfigError):
        redis_client("http://h/0")


def test_importing_it_does_not_import_redis():
    code = "import sys, coordinator.redis_client, tasks.config; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_sentinel_url_names_the_sentinels_the_master_and_the_db():
    target = redis_target("redis+sentinel://lava:p%40ss@s1:26380,s2,[::1]:26381/lab/3?wait=2&wait_ms=250")
    spec = target.sentinel
    assert spec is not None and target.ssl is None
    assert spec.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (spec.master, spec.db, spec.username, spec.password) == ("lab", 3, "lava", "p@ss")
    assert (spec.wait_replicas, spec.wait_ms) == (2, 250)
    # Celery's and kombu's form: one sentinel:// URL per sentinel, the master's name in the transport options.
    assert target.celery_url == ("sentinel://lava:p%40ss@s1:26380/3;sentinel://lava:p%40ss@s2:26379/3;"
                                 "sentinel://lava:p%40ss@[::1]:26381/3")
    assert target.transport_options()["master_name"] == "lab"
    assert "p@ss" not in target.redacted() and "p%40ss" not in target.redacted()
    defaults = redis_target("redis+sentinel://s1/lab").sentinel
    assert defaults is not None and (defaults.db, defaults.wait_replicas, defaults.wait_ms) == (0, 1, 1000)
    assert redis_target("redis://h/0").transport_options() == {}


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://:s3cret@/lab/0", "no sentinel address"),
    ("redis+sentinel://:s3cret@h:26379", "no master name"),
    ("redis+sentinel://:s3cret@h:notaport/lab", "the sentinel port of h is not a number"),
    ("redis+sentinel://:s3cret@h/lab/zero", "/MASTER or /MASTER/DB"),
    ("redis+sentinel://:s3cret@h/lab/0?wait=x", "wait='x' is not a whole number"),
    ("redis+sentinel://:s3cret@h/lab/0?ssl=1", "unknown option 'ssl'"),
])
def test_bad_sentinel_urls_are_a_config_error(url, message):
    with pytest.raises(ConfigError, match="LAVA_DISPATCH_REDIS_URL") as err:
        redis_target(url)
    assert message in str(err.value) and "s3cret" not in str(err.value)
