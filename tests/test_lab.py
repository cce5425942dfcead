"""The lab end to end: real board workers (``lava-dispatch worker``) on a private redis-server.

Boards are local-shell boards (sample_jobs/devices/local01.yaml under
several names). Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from lab_helpers import ROOT, Lab, RedisServer, local_job, make_certs, processes_mentioning, running_lab, wait_for

from tasks.keys import LAB, job_key

pytestmark = pytest.mark.lab

FINAL = ("Complete", "Incomplete", "Canceled")


@pytest.fixture
def lab(request):
    with running_lab(lease=getattr(request, "param", 15.0)) as the_lab:
        yield the_lab


def scheduler(lab):
    from tasks.scheduler import Lab as Scheduler

    return Scheduler(lab.r())


def record(lab, job_id):
    from tasks.records import get_job

    return get_job(lab.r(), job_id)


def steps(lab, job_id):
    from tasks.records import steps as read_steps

    return read_steps(lab.r(), job_id)


def wait_final(lab, job_id, timeout=60.0):
    return wait_for(lambda: (rec := record(lab, job_id))["state"] in FINAL and rec, timeout, f"job {job_id} to end")


def wait_running_test(lab, job_id, timeout=30.0):
    """Until the job's test action runs and its board shell runs the test's sleep."""
    def running():
        rec = record(lab, job_id)
        assert rec["state"] not in FINAL, rec
        return rec["state"] == "Running" and rec.get("current") == "lava-test-retry" and any(
            "sleep" in cmd for _, cmd in processes_mentioning(job_id))
    wait_for(running, timeout, f"job {job_id} running its test")


def assert_each_step_ran_once(lab, job_id):
    ran = [s for s in steps(lab, job_id)
           if s["outcome"] not in ("duplicate", "stale", "final", "missing", "already-ran")]
    numbers = [s["step"] for s in ran]
    assert len(numbers) == len(set(numbers)), f"a step ran twice: {ran}"
    return ran


def test_eight_jobs_on_four_boards(lab):
    for name in ("loc1", "loc2", "loc3", "loc4"):
        lab.start_worker(name, wait=False)
    for name in ("loc1", "loc2", "loc3", "loc4"):
        lab.wait_idle(name, 60)
    sched = scheduler(lab)
    jobs = [sched.submit(local_job(f"job{i}", ["lava-test-case nap --shell sleep 0.3"])).job_id for i in range(8)]
    for job_id in jobs:
        assert wait_final(lab, job_id, 90)["state"] == "Complete"
    spans = defaultdict(list)
    for job_id in jobs:
        rec = record(lab, job_id)
        ran = assert_each_step_ran_once(lab, job_id)
        assert [s["step"] for s in ran] == list(range(rec["nactions"] + 2))
        # every task of a job ran on one board, in one worker process
        assert {(s["board"], s["node"], s["pid"]) for s in ran} == {(rec["board"], f"{rec['board']}@{os.uname()[1]}",
                                                                     rec["worker_pid"])}
        spans[rec["board"]].append((ran[0]["t0"], ran[-1]["t1"], job_id))
    assert len(spans) == 4, "all four boards took jobs"
    for board, intervals in spans.items():
        intervals.sort()
        for (_, end, a), (start, _, b) in zip(intervals, intervals[1:]):
            assert end <= start, f"board {board} ran {a} and {b} at once"
    assert {b["state"] for b in sched.boards()} == {"idle"}


def test_high_priority_job_overtakes_queued_low_ones(lab):
    lab.start_worker("prio1")
    sched = scheduler(lab)
    blocker = sched.submit(local_job("blocker", ["lava-test-case wait --shell sleep 2"])).job_id
    lows = [sched.submit(local_job(f"low{i}"), priority="low").job_id for i in range(3)]
    high = sched.submit(local_job("high"), priority="high").job_id
    assert sched.queue("local-shell")[0] == high
    for job_id in [blocker, high, *lows]:
        assert wait_final(lab, job_id, 60)["state"] == "Complete"
    started = {job_id: int(record(lab, job_id)["started"]) for job_id in [blocker, high, *lows]}
    order = sorted(started, key=started.get)
    assert order == [blocker, high, *lows]


def test_cancel_running_job(lab):
    lab.start_worker("can1")
    sched = scheduler(lab)
    job_id = sched.submit(local_job("long", ["lava-test-case long --shell sleep 60"])).job_id
    wait_running_test(lab, job_id)
    asked = time.monotonic()
    assert sched.cancel(job_id) == ("Canceling", "can1")
    rec = wait_final(lab, job_id, 5)
    assert rec["state"] == "Canceled" and time.monotonic() - asked < 5
    lab.wait_idle("can1", 5)
    assert processes_mentioning(job_id) == []
    assert_each_step_ran_once(lab, job_id)
    # the board takes the next job
    nxt = sched.submit(local_job("after")).job_id
    assert wait_final(lab, nxt, 30)["state"] == "Complete"


def test_cancel_queued_job(lab):
    lab.start_worker("can2")
    sched = scheduler(lab)
    first = sched.submit(local_job("first", ["lava-test-case wait --shell sleep 2"])).job_id
    queued = sched.submit(local_job("queued")).job_id
    assert sched.cancel(queued) == ("Canceled", "")
    assert sched.queue() == []
    assert wait_final(lab, first, 30)["state"] == "Complete"
    assert steps(lab, queued) == []


def test_job_timeout_ends_a_stuck_test(lab):
    lab.start_worker("tmo1")
    sched = scheduler(lab)
    job_id = sched.submit(local_job("stuck", ["lava-test-case hang --shell sleep 120"], timeout_s=3)).job_id
    rec = wait_final(lab, job_id, 20)
    assert rec["state"] == "Incomplete"
    assert "timeout" in rec["error"].lower()
    lab.wait_idle("tmo1", 5)
    assert processes_mentioning(job_id) == []


def test_kill_9_of_a_board_worker(lab):
    lab.start_worker("kil1")
    sched = scheduler(lab)
    victim = sched.submit(local_job("victim", ["lava-test-case long --shell sleep 120"])).job_id
    wait_running_test(lab, victim)
    child = lab.child_pid("kil1")
    killed_at = time.monotonic()
    os.kill(child, signal.SIGKILL)
    rec = wait_final(lab, victim, 30)
    assert time.monotonic() - killed_at < 30
    assert rec["state"] == "Incomplete" and rec["error_type"] == "Infrastructure"
    node = f"kil1@{os.uname()[1]}"
    assert "worker lost" in rec["error"] and node in rec["error"] and str(child) in rec["error"], rec["error"]
    wait_for(lambda: processes_mentioning(victim) == [], 10, "the killed job's helpers to be gone")
    # the supervisor restarted the worker: the board is idle again and takes the next job
    lab.wait_idle("kil1", 30)
    assert not (lab.base / "tmp" / "lava-dispatch-kil1" / victim).exists(), "its scratch space is removed"
    assert lab.child_pid("kil1") != child
    nxt = sched.submit(local_job("next")).job_id
    assert wait_final(lab, nxt, 30)["state"] == "Complete"
    ran = assert_each_step_ran_once(lab, victim)
    assert [s["name"] for s in ran] == ["start", "minimal-boot"]  # the test action never finished, nor re-ran
    from tasks.records import read_log

    assert any("worker lost" in str(r["msg"]) for r in read_log(lab.r(), victim))


def test_kill_9_of_worker_and_supervisor_is_noticed_by_the_lease(lab):
    """The whole worker dies (supervisor too): another worker's heartbeat reaps the job and kills its helpers."""
    lab.start_worker("gone1")
    sched = scheduler(lab)
    victim = sched.submit(local_job("victim", ["lava-test-case long --shell sleep 120"])).job_id
    assert record(lab, victim)["board"] == "gone1"
    wait_running_test(lab, victim)
    lab.start_worker("watch1")  # the other worker whose heartbeat will notice
    supervisor = lab.workers["gone1"].pid
    child = lab.child_pid("gone1")
    killed_at = time.monotonic()
    os.kill(supervisor, signal.SIGKILL)  # the child dies with it (PR_SET_PDEATHSIG)
    rec = wait_final(lab, victim, 30)
    assert time.monotonic() - killed_at < 30
    assert rec["state"] == "Incomplete" and "worker lost" in rec["error"] and f"gone1@{os.uname()[1]}" in rec["error"]
    assert str(child) in rec["error"]
    wait_for(lambda: processes_mentioning(victim) == [], 10, "the lost job's helpers to be killed by the reaper")
    lab.workers["gone1"].wait(5)
    assert {b["board"]: b["state"] for b in sched.boards()}["gone1"] == "offline"
    lab.start_worker("gone1")  # a new worker recovers the board
    assert record(lab, victim)["state"] == "Incomplete"


def test_redis_restart_with_queued_and_running_jobs(lab):
    lab.start_worker("rr1")
    sched = scheduler(lab)
    running = sched.submit(local_job("running", ["lava-test-case wait --shell sleep 4"])).job_id
    queued = [sched.submit(local_job(f"queued{i}")).job_id for i in range(3)]
    wait_running_test(lab, running)
    lab.redis.stop()
    lab.redis.start()  # same port, same directory: the AOF brings everything back
    jobs = [running, *queued]
    for job_id in jobs:
        assert wait_final(lab, job_id, 120)["state"] == "Complete", record(lab, job_id)
        assert_each_step_ran_once(lab, job_id)
    lab.wait_idle("rr1", 30)


def test_a_duplicate_chain_does_nothing(lab):
    lab.start_worker("dup1")
    sched = scheduler(lab)
    job_id = sched.submit(local_job("once")).job_id
    rec = wait_final(lab, job_id, 30)
    before = len(steps(lab, job_id))
    from tasks.scheduler import send_chain

    send_chain(job_id, "dup1", rec["attempt"], rec["actions"], url=lab.redis.url)  # every step delivered twice
    wait_for(lambda: len(steps(lab, job_id)) == before + rec["nactions"] + 2, 30, "the duplicates to be seen")
    extra = steps(lab, job_id)[before:]
    assert {s["outcome"] for s in extra} == {"final"}
    assert record(lab, job_id)["state"] == "Complete"


@pytest.fixture
def quick_watchdog_lab():
    with running_lab(extra_env={"LAVA_DISPATCH_STALL_SECONDS": "2"}) as the_lab:
        yield the_lab


def test_lost_chain_messages_are_sent_again(quick_watchdog_lab):
    """A reserved job whose chain never arrived, and a chain cut after its first step, both complete."""
    lab = quick_watchdog_lab
    lab.start_worker("wd1")
    sched = scheduler(lab)
    never_sent = sched.submit(local_job("never-sent"), dispatch=False)
    assert never_sent.board == "wd1"
    assert wait_final(lab, never_sent.job_id, 30)["state"] == "Complete"
    assert record(lab, never_sent.job_id)["attempt"] == 2  # the watchdog sent it again as a new attempt
    # Only the start step is sent: the rest of the chain is "lost".
    cut = sched.submit(local_job("cut"), dispatch=False)
    from tasks.app import app_for

    app_for(lab.redis.url).signature("tasks.start", args=(cut.job_id, "wd1", 1, 2), queue="board.wd1",
                                     ignore_result=True).apply_async()
    rec = wait_final(lab, cut.job_id, 30)
    assert rec["state"] == "Complete"
    assert [s["step"] for s in assert_each_step_ran_once(lab, cut.job_id)] == [0, 1, 2, 3]


def job_of_task(lab, task_id, timeout=60):
    """The job id the lab assigned to a `celery call` of tasks.submit: the task's result."""
    from tasks.app import app_for

    return app_for(lab.redis.url).AsyncResult(task_id).get(timeout=timeout)


def record_of_task(lab, task_id):
    """The record whose client_ref is a `celery call`'s task id (a refused submission has no result)."""
    r = lab.r()
    for job_id in r.zrange(LAB.jobs, 0, -1):
        if r.hget(job_key(job_id), "client_ref") == task_id:
            return r.hgetall(job_key(job_id))
    return None


def test_celery_call_submits_like_the_cli(lab):
    lab.start_worker("cc1")
    text = local_job("via-celery")
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.submit", "--args",
                          json.dumps([text])], cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    task_id = out.stdout.strip().splitlines()[0]
    # the job id is the lab's, the task's result (`celery -A tasks result <task id>`)
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "result", task_id], cwd=ROOT,
                            env=lab.env, capture_output=True, text=True, timeout=60)
    job_id = result.stdout.strip()
    assert result.returncode == 0 and job_id.isdigit(), (result.stdout, result.stderr)
    rec = wait_final(lab, job_id, 30)
    assert rec["client_ref"] == task_id and rec["id"] == job_id
    assert rec["state"] == "Complete" and rec["board"] == "cc1"
    path = lab.base / "job.yaml"
    path.write_text(text)
    cli = subprocess.run([sys.executable, "-m", "tasks.cli", "submit", str(path), "--wait"], cwd=ROOT, env=lab.env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    other = record(lab, cli.stdout.splitlines()[0])
    same = ("name", "device_type", "priority", "definition", "state", "nactions", "actions", "board")
    assert {k: rec[k] for k in same} == {k: other[k] for k in same}
    # a job refused by tasks.submit has a record saying why
    bad = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.submit", "--args",
                          json.dumps(["job_name: x\n"])], cwd=ROOT, env=lab.env, capture_output=True, text=True,
                         timeout=60)
    bad_task = bad.stdout.strip().splitlines()[0]
    rejected = wait_for(lambda: record_of_task(lab, bad_task), 30, "the rejected job's record")
    assert rejected["state"] == "Incomplete" and "rejected" in rejected["error"] and rejected["id"].isdigit()


def cli(lab, *argv, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "tasks.cli", *argv], cwd=ROOT, env=lab.env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def test_cli_submit_status_logs_results_devices(lab):
    lab.start_worker("cli1")
    job = lab.base / "job.yaml"
    job.write_text(local_job("cli-job", ["lava-test-case good --shell true", "lava-test-case bad --shell false"]))
    out = cli(lab, "submit", str(job), "--follow")
    assert out.returncode == 0, out.stderr
    job_id, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert last == f"job {job_id}: Complete"
    assert "lava-test-case" in out.stderr or "good" in out.stderr  # the followed log
    assert job_id.isdigit()
    status = cli(lab, "status", job_id)
    assert "state: Complete" in status.stdout and "board: cli1" in status.stdout and "lava-test-retry" in status.stdout
    logs = cli(lab, "logs", job_id, "--yaml")
    import yaml

    records = yaml.safe_load(logs.stdout)
    assert records[0]["lvl"] == "info" and any(r["lvl"] == "results" for r in records)
    results = yaml.safe_load(cli(lab, "results", job_id).stdout)
    assert {(r["case"], r["result"]) for r in results} >= {("good", "pass"), ("bad", "fail"), ("job", "pass")}
    junit = cli(lab, "results", job_id, "--format", "junit").stdout
    assert junit.startswith("<?xml") and "testsuite" in junit
    out_dir = lab.base / "jobs" / job_id
    assert {"output.yaml", "results.yaml", "results.xml", "description.yaml", "job.yaml", "device.yaml"} <= {
        p.name for p in out_dir.iterdir()}
    devices = cli(lab, "devices")
    assert "cli1" in devices.stdout and "idle" in devices.stdout
    listing = cli(lab, "status")
    assert job_id in listing.stdout
    # --wait exit codes: Incomplete 1, Canceled 3
    job.write_text(local_job("too-slow", ["lava-test-case hang --shell sleep 60"], timeout_s=2))
    assert cli(lab, "submit", str(job), "--wait").returncode == 1
    job.write_text(local_job("to-cancel", ["lava-test-case hang --shell sleep 60"]))
    waiting = subprocess.Popen([sys.executable, "-m", "tasks.cli", "submit", str(job), "--wait"], cwd=ROOT,
                               env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    to_cancel = waiting.stdout.readline().strip()
    wait_running_test(lab, to_cancel)
    assert cli(lab, "cancel", to_cancel).returncode == 0
    assert waiting.wait(30) == 3
    # refused: no board of the type (and --queue-anyway queues it)
    job.write_text(local_job("nowhere", device_type="qemu-nowhere"))
    refused = cli(lab, "submit", str(job))
    assert refused.returncode == 2 and "no board of device type 'qemu-nowhere'" in refused.stderr
    queued = cli(lab, "submit", str(job), "--queue-anyway")
    assert queued.returncode == 0
    assert "state: Submitted" in cli(lab, "status", queued.stdout.split()[0]).stdout


def test_worker_stop_mid_job_ends_the_job_cleanly(lab):
    lab.start_worker("stop1")
    sched = scheduler(lab)
    job_id = sched.submit(local_job("interrupted", ["lava-test-case long --shell sleep 120"])).job_id
    wait_running_test(lab, job_id)
    lab.workers["stop1"].send_signal(signal.SIGTERM)
    assert lab.workers["stop1"].wait(20) == 0
    rec = record(lab, job_id)
    assert rec["state"] == "Incomplete" and "stopping" in rec["error"]
    assert processes_mentioning(job_id) == []
    assert {b["board"]: b["state"] for b in sched.boards()}["stop1"] == "offline"


def run_one_job_on(server, base, extra_env=None):
    the_lab = Lab(server, base, extra_env=extra_env)
    saved = {k: os.environ.get(k) for k in the_lab.env if k.startswith("LAVA_DISPATCH_")}
    the_lab.apply_env()
    try:
        the_lab.start_worker("sec1")
        job_id = scheduler(the_lab).submit(local_job("secured")).job_id
        assert wait_final(the_lab, job_id, 30)["state"] == "Complete"
        out = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.submit", "--args",
                              json.dumps([local_job("secured-celery")])], cwd=ROOT, env=the_lab.env,
                             capture_output=True, text=True, timeout=60)
        assert wait_final(the_lab, job_of_task(the_lab, out.stdout.split()[0]), 30)["state"] == "Complete"
        assert b"NOPERM" not in the_lab.logs["sec1"].read_bytes()
    finally:
        the_lab.stop_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_password(tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pass").start()
    try:
        run_one_job_on(server, tmp_path)
    finally:
        server.kill()


def test_tls_and_acl_user(tmp_path):
    """TLS (rediss://, the server's CA in LAVA_DISPATCH_REDIS_CA) and the ACL user docs/lab.md suggests."""
    certs = make_certs(tmp_path)
    server = RedisServer(tmp_path, password="s3cret-pass", acl_user="lava",
                         tls={"cert": str(certs / "server.pem"), "key": str(certs / "server.key"),
                              "ca": str(certs / "ca.pem")})
    os.environ["LAVA_DISPATCH_REDIS_CA"] = str(certs / "ca.pem")
    try:
        server.start()
        assert server.url.startswith("rediss://lava:")
        run_one_job_on(server, tmp_path, {"LAVA_DISPATCH_REDIS_CA": str(certs / "ca.pem")})
    finally:
        os.environ.pop("LAVA_DISPATCH_REDIS_CA", None)
        server.kill()


def test_flower_shows_every_task_of_a_job(lab):
    import urllib.request

    from lab_helpers import free_port

    port = free_port()
    log = open(lab.base / "flower.log", "wb")
    flower = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}",
                               "--address=127.0.0.1"], cwd=ROOT, env={**lab.env, "FLOWER_UNAUTHENTICATED_API": "1"},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def api(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                return json.loads(answer.read())

        def of_job(task, job_id):
            # a task of the job: its first argument is the job id (a short number, so not a substring test)
            return str(task.get("args")).startswith((f"('{job_id}',", f"['{job_id}',"))
        wait_for(lambda: api("/api/tasks") is not None, 60, "Flower's API")
        lab.start_worker("fl1")
        sched = scheduler(lab)

        def listening():
            # Flower's event receiver connects after its API is up: until it sees a probe job, events are missed.
            probe = sched.submit(local_job("probe")).job_id
            wait_final(lab, probe, 30)
            return any(of_job(t, probe) for t in api("/api/tasks").values())
        wait_for(listening, 60, "Flower receiving task events", interval=0.5)
        job_id = sched.submit(local_job("seen-by-flower")).job_id
        assert wait_final(lab, job_id, 30)["state"] == "Complete"

        def seen():
            # Flower applies each task's events as they arrive: wait until all four tasks have a final state.
            tasks = [t for t in api("/api/tasks").values() if of_job(t, job_id)]
            if len(tasks) < 4 or any(t["state"] not in ("SUCCESS", "FAILURE", "REVOKED") for t in tasks):
                return None
            return sorted((t["name"], t["state"]) for t in tasks)
        assert wait_for(seen, 60, "the job's tasks in Flower") == [
            ("tasks.action", "SUCCESS"), ("tasks.action", "SUCCESS"), ("tasks.finalize", "SUCCESS"),
            ("tasks.start", "SUCCESS")]
    finally:
        flower.terminate()
        flower.wait(20)
