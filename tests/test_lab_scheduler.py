"""The scheduler's Lua scripts on a private redis-server, without worker processes.

Boards are registered by hand (as a worker would); chains are not sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from lab_helpers import ROOT, RedisServer, local_job, make_tempdir, remove_tree, wait_for

from pipeline.device import load_device
from pipeline.errors import ProblemList
from tasks.keys import LAB, board_key, control_channel, group_key, group_request, job_key, type_keys

LOCAL = ROOT / "sample_jobs" / "devices" / "local01.yaml"


@pytest.fixture
def redis_server():
    base = make_tempdir("lab-sched-")
    server = RedisServer(base).start()
    yield server
    server.kill()
    remove_tree(base)


@pytest.fixture
def lab(redis_server, monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_LEASE_SECONDS", "15")
    from tasks.scheduler import Lab

    return Lab(redis_server.client())


def make_lab(redis_server, monkeypatch, lease: str):
    monkeypatch.setenv("LAVA_DISPATCH_LEASE_SECONDS", lease)
    from tasks.scheduler import Lab

    return Lab(redis_server.client())


def register(lab, name: str, tags: list[str] | None = None, device_path=LOCAL) -> None:
    text = device_path.read_text()
    device = load_device(device_path)
    if tags:
        device = device.model_copy(update={"tags": tags})
    answer = lab.register(name, text, device, node=f"{name}@test", pid=1, supervisor_pid=0, pid_file="/nonexistent")
    assert answer[0] == "free"
    lab.release(name)


def submit(lab, **kw):
    text = local_job(**{k: v for k, v in kw.items() if k in ("name", "priority", "tags", "device_type")})
    return lab.submit(text, dispatch=False, queue_anyway=kw.get("queue_anyway", False),
                      priority=kw.get("override"))


def finish(lab, job_id: str, state: str = "Complete"):
    rec = lab.r.hgetall(job_key(job_id))
    return lab.finish(job_id, rec["board"], int(rec["attempt"]), state, None, None, [], [])


def test_submit_refused_without_a_board_unless_queue_anyway(lab):
    from tasks.scheduler import SubmitError

    with pytest.raises(SubmitError, match="no board of device type 'local-shell'"):
        submit(lab)
    queued = submit(lab, queue_anyway=True)
    assert queued.state == "Submitted" and queued.board is None
    assert lab.queue("local-shell") == [queued.job_id]
    # A board that registers takes it at once.
    register(lab, "b1")
    assert lab.r.hget(job_key(queued.job_id), "state") == "Scheduled"
    assert lab.r.hget(board_key("b1"), "job") == queued.job_id


def test_invalid_job_is_refused_with_its_problems(lab):
    register(lab, "b1")
    with pytest.raises(ProblemList):
        lab.submit("device_type: local-shell\njob_name: x\n", dispatch=False)
    # Valid schema but no boot method the device offers: the pipeline is checked on the board's device config.
    bad = local_job().replace("method: minimal", "method: qemu")
    with pytest.raises(ProblemList) as info:
        lab.submit(bad, dispatch=False)
    assert any("qemu" in p for p in info.value.problems)
    assert lab.r.zcard(LAB.jobs) == 0


def test_placement_one_job_per_board_and_finish_takes_the_next(lab):
    register(lab, "b1")
    register(lab, "b2")
    a, b, c = submit(lab), submit(lab), submit(lab)
    assert {a.board, b.board} == {"b1", "b2"} and c.board is None
    final, placed = finish(lab, a.job_id)
    assert final == "Complete"
    assert [(p.job, p.board) for p in placed] == [(c.job_id, a.board)]
    rec = lab.r.hgetall(job_key(c.job_id))
    assert rec["state"] == "Scheduled" and rec["attempt"] == "1"
    # The finished job's keys expire; the board that finished is busy again.
    assert lab.r.ttl(job_key(a.job_id)) > 0
    assert {x["board"]: x["state"] for x in lab.boards()} == {"b1": "busy", "b2": "busy"}


def test_queue_order_priority_then_submit_time(lab):
    register(lab, "b1")
    blocker = submit(lab)
    low1 = submit(lab, priority="low")
    low2 = submit(lab, priority="low")
    medium = submit(lab)
    high = submit(lab, override="high")
    numeric = submit(lab, override=75)
    order = []
    current = blocker.job_id
    for _ in range(5):
        _, placed = finish(lab, current)
        current = placed[0].job
        order.append(current)
    assert order == [high.job_id, numeric.job_id, medium.job_id, low1.job_id, low2.job_id]


def test_tags_must_all_be_on_the_board(lab):
    register(lab, "plain")
    register(lab, "special", tags=["usb", "fast"])
    usb = submit(lab, tags=["usb"])
    assert usb.board == "special"
    other = submit(lab, tags=["hdmi"])
    assert other.board is None  # no board has the tag: it waits without taking "plain"
    assert lab.r.zscore(type_keys("local-shell").idle, "plain") is not None


def test_claim_is_a_compare_and_set(lab):
    register(lab, "b1")
    job = submit(lab).job_id
    assert lab.claim(job, "b1", 1, 0, "start", "n", 1) == ("ok", "Running")
    assert lab.claim(job, "b1", 1, 0, "start", "n", 1)[0] == "duplicate"
    assert lab.claim(job, "b1", 1, 2, "x", "n", 1)[0] == "duplicate"  # out of order
    assert lab.claim(job, "b1", 2, 1, "x", "n", 1)[0] == "stale"  # another attempt
    assert lab.claim(job, "b2", 1, 1, "x", "n", 1)[0] == "stale"  # another board
    assert lab.claim(job, "b1", 1, 1, "boot", "n", 1) == ("ok", "Running")
    assert lab.r.hget(job_key(job), "current") == "boot"
    finish(lab, job)
    assert lab.claim(job, "b1", 1, 2, "x", "n", 1) == ("final", "Complete")


def test_a_retried_script_call_returns_the_first_answer(lab):
    register(lab, "b1")
    job = submit(lab).job_id
    script = lab._scripts["claim"]
    keys, argv = lab.script_arguments("claim", job, "b1", 1, 0, "start", "n", 1, "h", token="token-1")
    assert script(keys=keys, args=argv) == ["ok", "Running"]
    assert script(keys=keys, args=argv) == ["ok", "Running"]  # as if the first answer was lost on the way
    assert lab.r.hget(job_key(job), "laststep") == "0"


def test_cancel_queued_and_running(lab):
    register(lab, "b1")
    running = submit(lab).job_id
    queued = submit(lab).job_id
    pubsub = lab.r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(control_channel("b1"))
    assert lab.cancel(queued) == ("Canceled", "")
    assert lab.queue("local-shell") == [] and lab.r.zcard(LAB.pending) == 0
    assert lab.cancel(running) == ("Canceling", "b1")
    message = wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "the cancel message")
    assert message["data"] == running
    final, _ = finish(lab, running, "Incomplete")
    assert final == "Canceled"
    assert lab.cancel(running)[0] == "Canceled"


def test_expired_lease_marks_a_running_job_incomplete_and_requeues_an_unstarted_one(redis_server, monkeypatch):
    lab = make_lab(redis_server, monkeypatch, "1")
    register(lab, "b1")
    register(lab, "b2")
    running = submit(lab).job_id
    reserved = submit(lab).job_id
    boards = {running: lab.r.hget(job_key(running), "board"), reserved: lab.r.hget(job_key(reserved), "board")}
    assert lab.claim(running, boards[running], 1, 0, "start", "worker-x@host", 4242)[0] == "ok"
    lab.heartbeat("b1", "b1@test", None)  # the lab's clock starts: reaping is allowed one lease later
    lost = wait_for(lambda: lab.reap(), 10, "an expired lease")
    states = {item.job: item.state for item in lost}
    assert states == {running: "Incomplete", reserved: "Submitted"}
    rec = lab.r.hgetall(job_key(running))
    assert rec["error_type"] == "Infrastructure"
    assert "worker lost" in rec["error"] and "b" in rec["error"] and "stopped renewing its lease" in rec["error"]
    assert lab.r.hget(job_key(reserved), "state") == "Submitted"
    assert lab.queue("local-shell") == [reserved]
    # Both boards are offline (their heartbeats are old) and out of the idle pool.
    assert {b["state"] for b in lab.boards()} == {"offline"}


def test_no_reaping_right_after_the_lab_was_unreachable(redis_server, monkeypatch):
    lab = make_lab(redis_server, monkeypatch, "1")
    register(lab, "b1")
    job = submit(lab).job_id
    lab.claim(job, "b1", 1, 0, "start", "n", 1)
    # No heartbeat of any worker for longer than a third of the lease: the lab "resumed" now.
    lab.r.set(LAB.tick, 0)
    lab.heartbeat("b1", "b1@test", job)
    assert lab.r.get(LAB.resumed) is not None
    lab.r.zadd(LAB.leases, {job: 0})  # its lease looks expired, but workers had no chance to renew it
    assert lab.reap() == []
    assert lab.r.hget(job_key(job), "state") == "Running"


def test_group_requests_are_placed_all_or_nothing(lab):
    """A multinode group is one request of several needs: never placed in half."""
    register(lab, "b1")
    jobs = []
    for index in range(2):  # the members of group 1, as the lab names them
        job_id = f"1.{index}"
        lab.r.hset(job_key(job_id), mapping={"id": job_id, "state": "Submitted", "attempt": 0, "laststep": -1})
        jobs.append(job_id)
    needs = [{"job": j, "device_type": "local-shell", "tags": []} for j in jobs]
    lab.r.hset(group_key("1"), mapping={"state": "Submitted", "needs": json.dumps(needs)})
    lab.r.zadd(LAB.pending, {group_request("1"): 1})
    lab.r.zadd(type_keys("local-shell").pending, {group_request("1"): 1})
    assert lab.release("b1") == []  # one idle board for two needs: the group waits, b1 stays idle
    assert lab.r.zscore(type_keys("local-shell").idle, "b1") is not None
    register(lab, "b2")  # b2 registers and becomes idle: now both can be reserved at once
    assert sorted(lab.r.hget(job_key(j), "board") for j in jobs) == ["b1", "b2"]
    assert lab.r.zcard(LAB.pending) == 0


def test_a_board_registered_elsewhere_and_alive_is_refused(lab):
    register(lab, "b1")
    device = load_device(LOCAL)
    answer = lab.register("b1", LOCAL.read_text(), device, node="b1@otherhost", pid=2, supervisor_pid=0,
                          pid_file="/x")
    assert answer[0] == "conflict" and answer[1][0] == "b1@test"


def test_importing_the_cli_does_not_import_celery():
    code = "import sys, tasks.cli; tasks.cli.build_parser(); print('celery' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_redis_url_options(monkeypatch):
    import ssl

    from tasks.config import redis_target

    plain = redis_target("redis://:secret@h:6380/2")
    assert plain.ssl is None and plain.redacted() == "redis://:***@h:6380/2"
    monkeypatch.setenv("LAVA_DISPATCH_REDIS_CA", "/etc/lava/ca.pem")
    tls = redis_target("rediss://lava:pw@h:6380/0?ssl_cert_reqs=required")
    assert tls.url == "rediss://lava:pw@h:6380/0"
    assert tls.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/lava/ca.pem"}
    assert redis_target("rediss://h/0").ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_celery_settings():
    from tasks.app import app

    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"] and conf.result_serializer == "json"
    assert conf.task_acks_late is False and conf.worker_disable_prefetch is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.broker_transport_options["visibility_timeout"] == conf.result_backend_transport_options["visibility_timeout"]
    # `celery -A tasks` finds the app whether or not tasks.app was imported first.
    import tasks

    assert tasks.celery is app
    out = subprocess.run([sys.executable, "-c", "from celery.app.utils import find_app; print(find_app('tasks').main)"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ}).stdout
    assert out.strip() == "lava-dispatch"


def test_status_of_a_celery_submission_not_taken_yet(lab):
    from tasks.records import JobNotFound, resolve_job_id

    job_id = "0123abcd-0000-4000-8000-000000000000"
    lab.r.lpush("lava.submit", json.dumps({"headers": {"id": job_id, "task": "tasks.submit"}}))
    with pytest.raises(JobNotFound, match="not recorded yet"):
        resolve_job_id(lab.r, job_id)
    with pytest.raises(JobNotFound, match="is not a job id"):
        resolve_job_id(lab.r, "ffffffff-0000")
    with pytest.raises(JobNotFound, match="no job 99"):
        resolve_job_id(lab.r, "99")
    register(lab, "b1")
    known = submit(lab).job_id
    assert resolve_job_id(lab.r, int(known)) == known == resolve_job_id(lab.r, f"00{known}")


def test_forget_only_an_offline_idle_board(lab):
    register(lab, "b1")
    assert lab.forget("b1") == "online"
    job = submit(lab).job_id
    lab.r.hset(board_key("b1"), "heartbeat", 0)
    assert lab.forget("b1") == "busy"
    finish(lab, job)
    assert lab.forget("b1") == "forgotten"
    assert lab.boards() == [] and lab.forget("b1") == "missing"


def test_a_submit_parses_the_job_once_and_builds_its_pipeline_once(lab, monkeypatch):
    """Validation builds the pipeline; the chain is sent with the names it gave, and so is a queued job's."""
    import pipeline.builder
    import pipeline.parser
    from tasks import chains

    register(lab, "b1")
    calls = {"parse": 0, "build": 0}
    sent = []
    real_parse, real_build = pipeline.parser.parse_job, pipeline.builder.build_pipeline

    def parse(text):
        calls["parse"] += 1
        return real_parse(text)

    def build(*args, **kwargs):
        calls["build"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(pipeline.parser, "parse_job", parse)
    monkeypatch.setattr(pipeline.builder, "build_pipeline", build)
    monkeypatch.setattr(chains, "send_chain", lambda job, board, attempt, names, *a, **k: sent.append((job, names)))
    first = lab.submit(local_job("first"))
    assert calls == {"parse": 1, "build": 1}
    assert sent == [(first.job_id, ["minimal-boot", "lava-test-retry"])]
    queued = lab.submit(local_job("second"))
    assert queued.board is None and calls == {"parse": 2, "build": 2}
    _, placed = finish(lab, first.job_id)
    lab.dispatch(placed)  # as the finishing worker does: from the record, nothing parsed or built
    assert calls == {"parse": 2, "build": 2}
    assert sent[-1] == (queued.job_id, ["minimal-boot", "lava-test-retry"])
    assert json.loads(lab.r.hget(job_key(queued.job_id), "actions")) == ["minimal-boot", "lava-test-retry"]


def test_the_lua_key_templates_are_the_python_ones(lab):
    """Every key a script can discover is named as tasks.keys names it; KEYS are checked by the scripts."""
    from tasks import keys, scripts

    probe = keys.lua_keys() + """
local j, g, b, t = K.job('12.1'), K.group('12'), K.board('b1'), K.type('kvm')
return {j.record, j.log, j.steps, j.results, g.record, b.record, b.tags, b.health, t.boards, t.idle, t.pending,
        K.control('b1'), K.LAB.leases}
"""
    expected = [*keys.job_keys("12.1").all(), keys.group_key("12"), *keys.board_keys("b1").all(),
                *keys.type_keys("kvm").all(), keys.control_channel("b1"), keys.LAB.leases]
    assert lab.r.eval(probe, 0) == expected
    # A call given keys that are not those of its arguments is refused before it changes anything.
    keys_, argv = lab.script_arguments("claim", "12", "b1", 1, 0, "start", "n", 1, "h", token="t")
    with pytest.raises(Exception, match="are not the keys of 12"):
        lab._scripts["claim"](keys=[keys_[0], *keys.job_keys("13").all(), keys_[-1]], args=argv)
    with pytest.raises(Exception, match="it took"):
        lab._scripts["claim"](keys=[*keys_[:-1], keys.LAB.jobs, keys_[-1]], args=argv)
    # No state or error type is spelt out in the scripts: they use the generated tables.
    names = {s.value for s in keys.JobState} | {s.value for s in keys.GroupState} | set(scripts.ERROR_TYPES)
    for path in sorted((ROOT / "tasks" / "lua").glob("*.lua")):
        text = path.read_text()
        assert not [n for n in names if f"'{n}'" in text or f'"{n}"' in text], path.name
