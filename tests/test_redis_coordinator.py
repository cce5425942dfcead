"""What only the Redis coordinator has: keys, expiry, idempotent scripts,
connection failures, password URLs, members in other processes.

The protocol itself is tested over both coordinators in test_coordination.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

from conftest import wait_for  # noqa: E402

from coordinator import RedisCoordinator  # noqa: E402
from coordinator.redis_coordinator import group_keys  # noqa: E402
from pipeline.errors import InfrastructureError, JobError  # noqa: E402

REDIS_URL = os.environ.get("LAVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {"server": "server", "client-1": "client", "client-2": "client"}


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _reachable(REDIS_URL), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
def raw():
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def prefix(raw):
    p = f"test-lava-{uuid.uuid4().hex}"
    yield p
    keys = list(raw.scan_iter(match=f"{p}:*", count=1000))
    if keys:
        raw.delete(*keys)


def prefix_keys(raw, prefix: str) -> list[str]:
    return sorted(raw.scan_iter(match=f"{prefix}:*", count=1000))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_key_layout_and_every_key_has_a_ttl(raw, prefix):
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix, group_ttl=3600)
    co.create_group("g1", MEMBERS)
    keys = group_keys(prefix, "g1")
    assert keys.meta == f"{prefix}:mn:{{g1}}:meta"
    assert set(prefix_keys(raw, prefix)) == {keys.meta, keys.members, keys.events}
    c = {m: co.client("g1", m) for m in MEMBERS}
    c["server"].send("ip", {"ipaddr": "1.2.3.4"})
    with pytest.raises(JobError):
        c["server"].sync("half", 0.05)  # an incomplete barrier
    c["server"].start_roles(["client"])
    assert set(prefix_keys(raw, prefix)) == set(keys.all())
    for key in keys.all():
        assert 0 < raw.pttl(key) <= 3600 * 1000, key
    assert raw.hgetall(keys.members) == MEMBERS
    assert raw.hget(keys.msg, "ip server") == '{"ipaddr":"1.2.3.4"}'
    assert raw.smembers(keys.started) == {"client"}
    for cl in c.values():
        cl.close()
    co.end_group("g1")
    co.close()


def test_keys_expire_after_end_group(raw, prefix):
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix, end_ttl=1)
    gid = f"g-{uuid.uuid4().hex}"
    co.create_group(gid, MEMBERS)
    c = {m: co.client(gid, m) for m in MEMBERS}
    c["server"].send("x", {"a": "b"})
    threads = [threading.Thread(target=cl.sync, args=("done", 10)) for cl in c.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    c["server"].start_roles(["client"])
    keys = prefix_keys(raw, prefix)
    assert len(keys) == 6
    co.end_group(gid)
    co.end_group(gid)  # twice: no harm, no longer TTL
    for key in keys:
        assert 0 < raw.pttl(key) <= 1000, key
    with pytest.raises(JobError, match="ended"):
        c["client-1"].send("late")
    with pytest.raises(JobError, match="ended"):
        co.client(gid, "server")
    wait_for(lambda: not prefix_keys(raw, prefix), 10, "the group's keys to expire")
    assert not co.group_exists(gid)
    with pytest.raises(JobError, match="does not exist"):
        c["client-1"].wait("x", 1)
    for cl in c.values():
        cl.close()
    co.close()


def test_arrivals_are_idempotent_in_redis(raw, prefix):
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix)
    co.create_group("g", MEMBERS)
    keys = group_keys(prefix, "g")
    c = {m: co.client("g", m) for m in MEMBERS}

    def events(kind):
        return [f for _id, f in raw.xrange(keys.events) if f.get("t") == kind]

    for _ in range(3):
        c["client-1"].send("up", {"v": "1"})
    assert len(events("send")) == 1
    c["client-1"].send("up", {"v": "2"})  # new data is a new event
    assert len(events("send")) == 2

    c["server"].start_roles(["client"])
    c["client-1"].start_roles(["client"])
    assert events("start") == [{"t": "start", "roles": "client"}]

    # The arrival script run twice for one member (a command re-sent after a
    # reconnect) counts one arrival.
    for _ in range(2):
        with pytest.raises(JobError):
            c["client-2"].sync("b", 0.05)
    assert raw.hget(keys.sync, "b") == "1"
    for cl in c.values():
        cl.close()
    co.end_group("g")
    co.close()


def test_completed_barrier_keeps_no_arrival_fields(raw, prefix):
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix)
    co.create_group("g", MEMBERS)
    c = [co.client("g", m) for m in MEMBERS]
    threads = [threading.Thread(target=cl.sync, args=("b", 10)) for cl in c]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert raw.hgetall(group_keys(prefix, "g").sync) == {"b": "3"}
    co.end_group("g")


def test_members_in_separate_processes(prefix):
    """Each member its own process and its own coordinator object: only the URL is shared."""
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix)
    gid = f"g-{uuid.uuid4().hex}"
    co.create_group(gid, MEMBERS)
    script = textwrap.dedent(
        """
        import json, sys
        from coordinator import RedisCoordinator
        url, prefix, gid, me = sys.argv[1:]
        c = RedisCoordinator(url, key_prefix=prefix).client(gid, me)
        c.sync("all-up", 30)
        if c.role == "server":
            c.send("ipv4", {"ipaddr": "10.1.2.3"})
            c.start_roles(["client"])
            got = c.wait_all("done", 30, role="client")
        else:
            c.wait_for_start(30)
            got = c.wait("ipv4", 30)
            c.send("done", {"me": me})
        print(json.dumps(got, sort_keys=True))
        """
    )
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", script, REDIS_URL, prefix, gid, m],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in MEMBERS
    }
    out = {}
    try:
        for m, p in procs.items():
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr
            out[m] = stdout.strip()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert out["server"] == '{"client-1": {"me": "client-1"}, "client-2": {"me": "client-2"}}'
    assert out["client-1"] == out["client-2"] == '{"server": {"ipaddr": "10.1.2.3"}}'
    co.end_group(gid)


def test_unreachable_redis_is_an_infrastructure_error():
    co = RedisCoordinator(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    with pytest.raises(InfrastructureError, match="unreachable"):
        co.create_group("g", MEMBERS)


# --- a private redis-server --------------------------------------------------


@pytest.fixture
def private_redis():
    """A redis-server of our own with a password, on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary")
    port = free_port()
    password = uuid.uuid4().hex
    proc = subprocess.Popen(
        [binary, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1",
         "--daemonize", "no", "--requirepass", password],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    r = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=0.5)

    def up():
        try:
            return r.ping()
        except redis.exceptions.ConnectionError:
            assert proc.poll() is None, "redis-server exited"
            return False

    try:
        wait_for(up, 10, "the private redis-server")
        yield proc, port, password
    finally:
        r.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_password_url(private_redis):
    _proc, port, password = private_redis
    co = RedisCoordinator(f"redis://:{password}@127.0.0.1:{port}/3")
    co.create_group("g", {"a": "x", "b": "y"})
    a, b = co.client("g", "a"), co.client("g", "b")
    a.send("m", {"k": "v"})
    assert b.wait("m", 5) == {"a": {"k": "v"}}
    bad = RedisCoordinator(f"redis://:wrong@127.0.0.1:{port}/3", socket_timeout=1)
    with pytest.raises(InfrastructureError) as err:
        bad.group_exists("g")
    assert "wrong" not in str(err.value)  # the password never reaches a message


def test_redis_dying_under_a_waiter(private_redis):
    proc, port, password = private_redis
    co = RedisCoordinator(f"redis://:{password}@127.0.0.1:{port}/0", socket_timeout=1)
    co.create_group("g", MEMBERS)
    c = co.client("g", "client-1")
    blocked = threading.Event()
    outcome: list[BaseException] = []

    def waiter():
        def should_stop():
            blocked.set()
            return False

        try:
            c.sync("never", 60, should_stop=should_stop)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert blocked.wait(10)
    proc.kill()
    proc.wait(10)
    t.join(30)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], InfrastructureError), outcome


# --- TLS with a client certificate --------------------------------------------


@pytest.fixture
def tls_redis(tmp_path, monkeypatch):
    """A redis-server that speaks only TLS and asks every client for a certificate signed by its CA.

    The CA, client certificate and key are in LAVA_DISPATCH_REDIS_CA/_CERT/_KEY, as on a lab host.
    """
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        pytest.skip("no redis-server or openssl binary")
    from lab_helpers import RedisServer, make_certs

    certs = make_certs(tmp_path, client=True)
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CA", str(certs / "ca.pem"))
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CERT", str(certs / "client.pem"))
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_KEY", str(certs / "client.key"))
    server = RedisServer(tmp_path, password=uuid.uuid4().hex,
                         tls={"cert": str(certs / "server.pem"), "key": str(certs / "server.key"),
                              "ca": str(certs / "ca.pem"), "auth_clients": "yes"})
    try:
        server.start()
        yield server, certs
    finally:
        server.kill()


def test_tls_with_the_client_certificate_of_the_environment(tls_redis):
    """The coordinator and each member's own connection present LAVA_DISPATCH_REDIS_CERT/_KEY."""
    server, _certs = tls_redis
    assert server.url.startswith("rediss://")
    co = RedisCoordinator(server.url, key_prefix="tls", socket_timeout=2)
    co.create_group("g", MEMBERS)
    c = {m: co.client("g", m) for m in MEMBERS}
    c["server"].send("ip", {"ipaddr": "10.0.0.1"})
    assert c["client-1"].wait("ip", 5) == {"server": {"ipaddr": "10.0.0.1"}}
    threads = [threading.Thread(target=cl.sync, args=("up", 10)) for cl in c.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    c["server"].start_roles(["client"])
    c["client-2"].wait_for_start(5)
    co.end_group("g")
    with pytest.raises(JobError, match="ended"):
        c["client-2"].send("late")
    for cl in c.values():
        cl.close()
    co.close()


@pytest.mark.parametrize("without", ["certificate", "trusted certificate"])
def test_tls_without_a_client_certificate_fails_cleanly(tls_redis, tmp_path, monkeypatch, without):
    from lab_helpers import make_certs

    server, certs = tls_redis
    if without == "certificate":
        monkeypatch.delenv("LAVA_DISPATCH_REDIS_CERT")
        monkeypatch.delenv("LAVA_DISPATCH_REDIS_KEY")
    else:  # a client certificate that another CA signed
        (tmp_path / "other").mkdir()
        other = make_certs(tmp_path / "other", client=True)
        monkeypatch.setenv("LAVA_DISPATCH_REDIS_CERT", str(other / "client.pem"))
        monkeypatch.setenv("LAVA_DISPATCH_REDIS_KEY", str(other / "client.key"))
    co = RedisCoordinator(server.url, socket_timeout=1)
    start = time.monotonic()
    with pytest.raises(InfrastructureError) as err:
        co.create_group("g", MEMBERS)
    assert time.monotonic() - start < 15
    message = str(err.value)
    assert message.startswith("create multinode group 'g': Redis at rediss://:***@127.0.0.1:"), message
    assert server.password not in message
    co.close()
    # The URL's own ssl_certfile/ssl_keyfile win over the environment: the server was fine.
    good = RedisCoordinator(f"{server.url}?ssl_certfile={certs / 'client.pem'}&ssl_keyfile={certs / 'client.key'}")
    assert not good.group_exists("g")
    good.close()
