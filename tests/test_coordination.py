"""The Multinode protocol, run over both coordinators.

Every test is parametrised over LocalCoordinator and RedisCoordinator (the
real Redis on 127.0.0.1:6379, or $LAVA_TEST_REDIS_URL). Each test uses its
own key prefix and group id, so it never meets another user of the database.

No sleeps synchronise anything: "member X is blocked in its wait" is observed
through ``should_stop``, which a wait calls after every unsuccessful check,
before it blocks again.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from pipeline.coordination import MultinodeClient
from pipeline.errors import Canceled, JobError
from pipeline.local_coordinator import LocalCoordinator

REDIS_URL = os.environ.get("LAVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
JOIN = 10.0  # longest a test waits for a thread


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(params=["local", "redis"])
def coordinator(request):
    if request.param == "local":
        yield LocalCoordinator()
        return
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    from coordinator import RedisCoordinator

    prefix = f"test-lava-{uuid.uuid4().hex}"
    co = RedisCoordinator(REDIS_URL, key_prefix=prefix, end_ttl=5)
    yield co
    co.close()
    delete_prefix(REDIS_URL, prefix)


@pytest.fixture
def group(coordinator):
    """``group(members) -> {member_id: client}`` for a fresh group."""
    created: list[tuple[str, list]] = []

    def make(members: dict[str, str]) -> dict[str, MultinodeClient]:
        gid = f"group-{uuid.uuid4().hex}"
        coordinator.create_group(gid, members)
        clients = {m: coordinator.client(gid, m) for m in members}
        created.append((gid, list(clients.values())))
        return clients

    yield make
    for gid, clients in created:
        for c in clients:
            c.close()
        coordinator.end_group(gid)


SERVER_CLIENTS = {"server": "server", "client-1": "client", "client-2": "client"}


class Blocked:
    """A should_stop that records when the waiter has blocked; can cancel."""

    def __init__(self) -> None:
        self.blocked = threading.Event()
        self.cancel = threading.Event()
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        self.blocked.set()
        return self.cancel.is_set()

    def wait_blocked(self) -> None:
        assert self.blocked.wait(JOIN), "the waiter never blocked"


class Runner(threading.Thread):
    """A thread that keeps the result or the exception of ``fn``."""

    def __init__(self, fn, *args, **kwargs) -> None:
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # handed to the test
            self.error = exc
        self.finished_at = time.monotonic()

    def finish(self, timeout: float = JOIN):
        self.join(timeout)
        assert not self.is_alive(), f"{self.fn} did not return within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


# --- lava-group / lava-self / lava-role --------------------------------------


def test_members_and_identity(group):
    clients = group(SERVER_CLIENTS)
    c = clients["client-1"]
    assert isinstance(c, MultinodeClient)
    assert (c.member_id, c.role) == ("client-1", "client")
    assert c.members() == SERVER_CLIENTS
    assert clients["server"].group_id == c.group_id


def test_unknown_member_or_group(coordinator, group):
    clients = group(SERVER_CLIENTS)
    gid = clients["server"].group_id
    with pytest.raises(JobError, match="not a member"):
        coordinator.client(gid, "nobody")
    with pytest.raises(JobError, match="does not exist"):
        coordinator.client(f"missing-{uuid.uuid4().hex}", "server")


def test_create_group_is_idempotent(coordinator):
    gid = f"group-{uuid.uuid4().hex}"
    coordinator.create_group(gid, SERVER_CLIENTS)
    coordinator.create_group(gid, dict(SERVER_CLIENTS))  # a retried create
    with pytest.raises(JobError, match="already exists"):
        coordinator.create_group(gid, {"server": "server"})
    assert coordinator.group_exists(gid)
    coordinator.end_group(gid)


@pytest.mark.parametrize("bad", ["", "two words", "tab\there", "nl\n", "ctl\x07", "nbsp\u00a0x"])
def test_bad_ids_are_refused(coordinator, group, bad):
    c = group(SERVER_CLIENTS)["server"]
    with pytest.raises(JobError):
        c.send(bad)
    with pytest.raises(JobError):
        c.wait(bad, 0.1)
    with pytest.raises(JobError):
        c.wait_all(bad, 0.1)
    with pytest.raises(JobError):
        c.sync(bad, 0.1)
    with pytest.raises(JobError):
        coordinator.create_group(f"g-{uuid.uuid4().hex}", {bad: "role"})
    with pytest.raises(JobError):
        coordinator.create_group(f"g-{uuid.uuid4().hex}", {"member": bad})


def test_bad_data_is_refused(group):
    c = group(SERVER_CLIENTS)["server"]
    with pytest.raises(JobError, match="must be a string"):
        c.send("x", {"port": 22})  # type: ignore[dict-item]


# --- lava-send / lava-wait ---------------------------------------------------


def test_send_then_wait_with_data(group):
    clients = group(SERVER_CLIENTS)
    clients["server"].send("ipv4", {"ipaddr": "192.168.0.3", "port": "22"})
    got = clients["client-1"].wait("ipv4", 5)
    assert got == {"server": {"ipaddr": "192.168.0.3", "port": "22"}}


def test_send_without_data(group):
    clients = group(SERVER_CLIENTS)
    clients["server"].send("ready")
    assert clients["client-2"].wait("ready", 5) == {"server": {}}


def test_wait_before_send_blocks_then_returns(group):
    clients = group(SERVER_CLIENTS)
    stop = Blocked()
    waiter = Runner(clients["client-1"].wait, "ipv4", JOIN, should_stop=stop)
    stop.wait_blocked()
    assert waiter.is_alive()
    clients["server"].send("ipv4", {"ipaddr": "10.0.0.1"})
    assert waiter.finish() == {"server": {"ipaddr": "10.0.0.1"}}


def test_wait_returns_every_sender_so_far_but_not_self(group):
    clients = group(SERVER_CLIENTS)
    clients["client-1"].send("hello", {"n": "1"})
    clients["client-2"].send("hello", {"n": "2"})
    clients["server"].send("hello", {"n": "0"})
    assert clients["client-1"].wait("hello", 5) == {"client-2": {"n": "2"}, "server": {"n": "0"}}


def test_own_send_does_not_satisfy_wait(group):
    clients = group(SERVER_CLIENTS)
    clients["server"].send("mine")
    with pytest.raises(JobError) as err:
        clients["server"].wait("mine", 0.2)
    msg = str(err.value)
    assert msg.startswith("lava-wait 'mine': timeout after 0.")
    assert "any of client-1 (role client), client-2 (role client)" in msg


def test_repeated_send_is_counted_once_and_latest_data_wins(group):
    clients = group(SERVER_CLIENTS)
    for _ in range(3):
        clients["client-1"].send("up", {"v": "1"})
    # Still waiting for client-2: the repeats did not count as other members.
    with pytest.raises(JobError, match=r"waiting for client-2 \(role client\)$"):
        clients["server"].wait_all("up", 0.2)
    clients["client-1"].send("up", {"v": "2"})
    clients["client-2"].send("up")
    assert clients["server"].wait_all("up", 5) == {"client-1": {"v": "2"}, "client-2": {}}


def test_wait_alone_in_group_is_an_error(group):
    solo = group({"only": "role"})["only"]
    with pytest.raises(JobError, match="no other member"):
        solo.wait("x", 1)


# --- lava-wait-all -----------------------------------------------------------


def test_wait_all_without_role(group):
    clients = group(SERVER_CLIENTS)
    stop = Blocked()
    waiter = Runner(clients["server"].wait_all, "booted", JOIN, should_stop=stop)
    stop.wait_blocked()  # nothing sent yet: it waits, it does not fail
    clients["client-1"].send("booted", {"ip": "a"})
    clients["client-2"].send("booted", {"ip": "b"})
    assert waiter.finish() == {"client-1": {"ip": "a"}, "client-2": {"ip": "b"}}


def test_wait_all_with_role(group):
    clients = group({"server": "server", "client-1": "client", "client-2": "client", "obs": "observer"})
    stop = Blocked()
    waiter = Runner(clients["obs"].wait_all, "booted", JOIN, "client", should_stop=stop)
    stop.wait_blocked()
    clients["server"].send("booted")  # not of the role: irrelevant
    clients["client-2"].send("booted", {"ip": "b"})
    clients["client-1"].send("booted", {"ip": "a"})
    assert waiter.finish() == {"client-1": {"ip": "a"}, "client-2": {"ip": "b"}}


def test_wait_all_of_own_role_excludes_self(group):
    clients = group(SERVER_CLIENTS)
    clients["client-2"].send("x", {"k": "v"})
    assert clients["client-1"].wait_all("x", 5, role="client") == {"client-2": {"k": "v"}}


def test_wait_all_partial_send_times_out_naming_missing(group):
    clients = group(SERVER_CLIENTS)
    clients["client-1"].send("booted")
    with pytest.raises(JobError) as err:
        clients["server"].wait_all("booted", 0.3, role="client")
    msg = str(err.value)
    assert msg.startswith("lava-wait-all 'booted': timeout after 0.")
    assert msg.endswith("waiting for client-2 (role client)")


def test_wait_all_unknown_role(group):
    clients = group(SERVER_CLIENTS)
    with pytest.raises(JobError, match="has role 'nope'"):
        clients["server"].wait_all("x", 1, role="nope")


# --- lava-sync ---------------------------------------------------------------


def test_sync_barrier_with_four_threads(group):
    members = {f"m{i}": "worker" for i in range(4)}
    clients = group(members)
    stops = {m: Blocked() for m in members}
    first = [Runner(clients[m].sync, "barrier", JOIN, should_stop=stops[m]) for m in ("m0", "m1", "m2")]
    for m in ("m0", "m1", "m2"):
        stops[m].wait_blocked()
    assert all(r.is_alive() for r in first), "released before the last member arrived"
    last_arrival = time.monotonic()
    last = Runner(clients["m3"].sync, "barrier", JOIN)
    for r in [*first, last]:
        r.finish()
        assert r.finished_at >= last_arrival


def test_fifty_barriers_four_members(group):
    members = {f"m{i}": "worker" for i in range(4)}
    clients = group(members)
    lock = threading.Lock()
    arrived = [0] * 50
    problems: list[str] = []

    def member(c):
        for i in range(50):
            with lock:
                arrived[i] += 1
            c.sync(f"b{i}", JOIN)
            with lock:
                if arrived[i] != 4:
                    problems.append(f"{c.member_id} passed b{i} with {arrived[i]} arrivals")

    runners = [Runner(member, clients[m]) for m in members]
    for r in runners:
        r.finish(60)
    assert problems == []


def test_completed_sync_id_returns_at_once(group):
    clients = group(SERVER_CLIENTS)
    runners = [Runner(c.sync, "setup", JOIN) for c in clients.values()]
    for r in runners:
        r.finish()
    # A retried action: the other members are elsewhere now.
    start = time.monotonic()
    clients["client-1"].sync("setup", 5)
    clients["client-1"].sync("setup", 0)
    assert time.monotonic() - start < 0.5


def test_repeated_sync_arrival_counted_once(group):
    clients = group(SERVER_CLIENTS)
    for _ in range(2):  # client-1 arrives, times out, its action retries
        with pytest.raises(JobError):
            clients["client-1"].sync("b", 0.1)
    # With client-1 counted twice the barrier would complete now; it must not.
    with pytest.raises(JobError) as err:
        clients["server"].sync("b", 0.2)
    assert str(err.value).endswith("waiting for client-2 (role client)")
    server = Runner(clients["server"].sync, "b", JOIN)
    clients["client-2"].sync("b", JOIN)
    server.finish()


def test_sync_timeout_names_missing_members(group):
    clients = group(SERVER_CLIENTS)
    stop = Blocked()
    server = Runner(clients["server"].sync, "barrier3", JOIN, should_stop=stop)
    stop.wait_blocked()
    with pytest.raises(JobError) as err:
        clients["client-1"].sync("barrier3", 0.3)
    msg = str(err.value)
    assert msg.startswith("lava-sync 'barrier3': timeout after 0.")
    assert msg.endswith(" s waiting for client-2 (role client)")
    clients["client-2"].sync("barrier3", JOIN)
    server.finish()


# --- lava-start --------------------------------------------------------------


def test_lava_start_releases_delayed_role(group):
    clients = group(SERVER_CLIENTS)
    stops = [Blocked(), Blocked()]
    waiters = [
        Runner(clients[m].wait_for_start, JOIN, should_stop=s)
        for m, s in zip(("client-1", "client-2"), stops)
    ]
    for s in stops:
        s.wait_blocked()
    assert all(w.is_alive() for w in waiters)
    clients["server"].start_roles(["client"])
    for w in waiters:
        w.finish()
    # A later start of the started role has no effect, and does not fail.
    clients["server"].start_roles(["client"])
    clients["client-1"].wait_for_start(0)
    # Other roles are still not started.
    with pytest.raises(JobError):
        clients["server"].wait_for_start(0.1)


def test_lava_start_timeout(group):
    clients = group(SERVER_CLIENTS)
    with pytest.raises(JobError) as err:
        clients["client-1"].wait_for_start(0.2)
    msg = str(err.value)
    assert msg.startswith("lava-start: timeout after 0.")
    assert "role 'client' of client-1 to be started" in msg


def test_lava_start_unknown_role(group):
    clients = group(SERVER_CLIENTS)
    with pytest.raises(JobError, match="has role 'nope'"):
        clients["server"].start_roles(["client", "nope"])


def test_lava_start_before_wait(group):
    clients = group(SERVER_CLIENTS)
    clients["server"].start_roles(["client"])
    clients["client-2"].wait_for_start(1)


# --- cancel, end -------------------------------------------------------------


@pytest.mark.parametrize("call", ["wait", "wait_all", "sync", "wait_for_start"])
def test_should_stop_cancels_a_wait(group, call):
    clients = group(SERVER_CLIENTS)
    c = clients["client-1"]
    stop = Blocked()
    args = () if call == "wait_for_start" else ("never",)
    waiter = Runner(getattr(c, call), *args, 60, should_stop=stop)
    stop.wait_blocked()
    canceled = time.monotonic()
    stop.cancel.set()
    with pytest.raises(Canceled, match="canceled after"):
        waiter.finish()
    # should_stop is checked at least every 0.5 s.
    assert waiter.finished_at - canceled < 1.5


def test_end_group_fails_waiters_at_once(coordinator, group):
    clients = group(SERVER_CLIENTS)
    stop = Blocked()
    waiter = Runner(clients["client-1"].sync, "never", 60, should_stop=stop)
    stop.wait_blocked()
    ended = time.monotonic()
    coordinator.end_group(clients["server"].group_id)
    with pytest.raises(JobError, match="ended"):
        waiter.finish()
    assert waiter.finished_at - ended < 1.5
    with pytest.raises(JobError):
        clients["server"].send("late")
