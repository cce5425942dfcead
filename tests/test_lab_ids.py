"""Job ids are the lab's: hostile Celery task ids, wrong ``tasks.submit`` arguments, bad settings,
SIGTERM with Redis down.

The lab tests run real board workers (``lava-dispatch worker``) and, where
the board is kept busy, a dedicated ``celery worker -Q lava.submit`` on a
private redis-server. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from lab_helpers import ROOT, descendants_by_env, local_job, processes_mentioning, running_lab, wait_for

from tasks.keys import LAB, board_key, job_key, results_key

FINAL = ("Complete", "Incomplete", "Canceled")
KEY_OF_A_JOB = re.compile(r"^lava:\{job:\d+(\.\d+)?\}:(record|log|steps|results)$")


# ---------------------------------------------------------------- pure rules


def test_job_ids_are_numbers_and_nothing_else():
    from tasks.ids import InvalidJobId, check_job_id, require_job_id

    assert check_job_id("42") == "42" and check_job_id(42) == "42" and check_job_id("42.1") == "42.1"
    assert check_job_id("007") == "7" and check_job_id("3.01") == "3.1"
    for bad in ("/tmp/x", "../../x", "1:results", "group:abc", "1.2.3", "", " 1", "1\n", "-1", "1e3", "٣",
                "1" * 41, True, None, 1.5, ["1"]):
        with pytest.raises(InvalidJobId, match="not a job id|job id is a number"):
            check_job_id(bad)
    with pytest.raises(InvalidJobId):
        require_job_id("007")  # keys are built only from ids written as the lab writes them


def test_keys_are_never_built_from_a_client_id():
    from tasks.ids import InvalidJobId
    from tasks.records import log_key, results_key
    from tasks.scheduler import group_key, job_key

    assert job_key("12") == "lava:{job:12}:record" and results_key("12.0") == "lava:{job:12.0}:results"
    assert group_key("12") == "lava:{group:12}:record"
    for bad in ("12:results", "group:abc", "../x", "12 "):
        with pytest.raises(InvalidJobId):
            job_key(bad)
        with pytest.raises(InvalidJobId):
            log_key(bad)
    with pytest.raises(InvalidJobId):
        group_key("12.0")  # a member is not a group


def test_per_job_paths_stay_under_their_root(tmp_path):
    from tasks.ids import PathOutsideRoot, job_dir, path_under

    root = tmp_path / "jobs"
    root.mkdir()
    assert job_dir(root, "5") == root.resolve() / "5"
    assert path_under(root, "5", "board") == root.resolve() / "5" / "board"
    (root / "link").symlink_to(tmp_path)
    for parts in (("/tmp/elsewhere",), ("..", "x"), ("../../x",), ("",), (".",), ("link", "x")):
        with pytest.raises(PathOutsideRoot):
            path_under(root, *parts)
    with pytest.raises(ValueError):
        job_dir(root, "../../x")


def test_submit_arguments_are_checked_not_coerced():
    from tasks.scheduler import SubmitError
    from tasks.submission import chain_arguments_problem, submit_arguments

    assert submit_arguments(("yaml",), {}) == ("yaml", None, False)
    assert submit_arguments(("yaml", "high", True), {}) == ("yaml", 100, True)
    assert submit_arguments((), {"definition": "yaml", "priority": 0}) == ("yaml", 0, False)
    refused = {((42,), ()): "definition must be the job's YAML text",
               ((), ()): "needs the job's YAML text",
               (("y",), (("priority", 1.5),)): "expected a whole number, got float 1.5",
               (("y",), (("priority", True),)): "expected a whole number, got true",
               (("y",), (("priority", float("inf")),)): "expected a whole number, got float inf",
               (("y",), (("priority", "HIGH"),)): "'HIGH' is not high, medium, low",
               (("y",), (("priority", "50"),)): "'50' is not high, medium, low",
               (("y",), (("priority", 101),)): "must be <= 100",
               (("y",), (("queue_anyway", "no"),)): "queue_anyway must be true or false",
               (("y",), (("queue_anyway", 1),)): "queue_anyway must be true or false",
               (("y",), (("bogus", 1),)): "unknown keyword argument",
               (("y", None, False, "x"), ()): "at most 3 arguments",
               (("y",), (("definition", "z"),)): "twice"}
    for (args, kwargs), message in refused.items():
        with pytest.raises(SubmitError, match=re.escape(message)):
            submit_arguments(args, dict(kwargs))
    assert chain_arguments_problem("3", "b1", 1, 0) is None
    assert "not one of the lab's" in chain_arguments_problem("/tmp/x", "b1", 1, 0)
    assert "not a step" in chain_arguments_problem("3", "b1", "1", 0)
    assert "not a step" in chain_arguments_problem("3", "b1", True, 0)


def test_cli_priority_follows_the_job_file_rule():
    from tasks.lab_cli import priority_argument
    from tasks.scheduler import SubmitError, priority_value

    assert priority_argument("75") == 75 and priority_argument("high") == "high"
    assert priority_value(priority_argument("75")) == 75 and priority_value("low") == 0
    for text in ("1.5", "HIGH", "true", "101", "-1", "٣"):
        with pytest.raises(SubmitError, match="priority"):
            priority_value(priority_argument(text))


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "redis://h:port/0", "REDIS://h/0"])
def test_a_bad_redis_url_is_refused_in_one_line(url, tmp_path):
    env = {**os.environ, "LAVA_DISPATCH_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    for argv in (["status"], ["submit", str(tmp_path / "job.yaml")], ["cancel", "1"],
                 ["worker", "--device", str(ROOT / "sample_jobs" / "devices" / "local01.yaml")]):
        out = subprocess.run([sys.executable, "-m", "tasks.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "LAVA_DISPATCH_REDIS_URL" in lines[0] and "Traceback" not in out.stderr, lines
    celery = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.submit", "--args", "[]"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert celery.returncode != 0 and "Traceback" not in celery.stderr
    assert celery.stderr.strip().splitlines() == [next(line for line in celery.stderr.splitlines()
                                                       if "LAVA_DISPATCH_REDIS_URL" in line)]


# ---------------------------------------------------------------- the lab


def record(lab, job_id):
    return lab.r().hgetall(job_key(job_id))


def wait_final(lab, job_id, timeout=60.0):
    return wait_for(lambda: (rec := record(lab, job_id)).get("state") in FINAL and rec, timeout, f"job {job_id} to end")


def scheduler(lab):
    from tasks.scheduler import Lab as Scheduler

    return Scheduler(lab.r())


def celery_app(lab):
    from tasks.app import app_for

    return app_for(lab.redis.url)


def start_submit_worker(lab) -> subprocess.Popen:
    """The dedicated ``tasks.submit`` worker docs/lab.md suggests, for when every board is busy."""
    log_path = lab.base / "submit-worker.log"
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "lava.submit",
                                "--pool", "threads", "-c", "2", "-n", "submit@%h", "--without-mingle",
                                "--without-gossip", "--loglevel", "INFO"], cwd=ROOT, env=lab.env,
                               stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    lab.workers["submit"] = process  # stopped with the lab's workers
    lab.logs["submit"] = log_path
    wait_for(lambda: b"ready." in log_path.read_bytes() or process.poll() is not None, 60, "the submit worker")
    assert process.poll() is None, log_path.read_text()[-3000:]
    return process


def snapshot(path: Path):
    """What a path is now (None: absent), to show that a job did not write there."""
    if not path.exists():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, sorted(os.listdir(path)) if path.is_dir() else stat.st_size


@pytest.mark.lab
def test_hostile_celery_task_ids_are_only_correlation_handles():
    """Task ids that are paths or another job's keys: the lab gives the jobs its own ids and nothing breaks."""
    with running_lab("lab-ids-") as lab:
        lab.start_worker("hid1")
        start_submit_worker(lab)
        sched = scheduler(lab)
        release = lab.base / "release"
        blocker = sched.submit(local_job("blocker", [f"while [ ! -e {release} ]; do sleep 0.1; done",
                                                     "lava-test-case held --result pass"])).job_id
        wait_for(lambda: record(lab, blocker).get("current") == "lava-test-retry", 30, "the blocker's test")
        marker_dir = Path(tempfile.mkdtemp(prefix="xyz-marker-dir-", dir="/tmp"))
        try:
            (marker_dir / "marker").write_text("keep me")
            outside = {p: snapshot(p) for p in (lab.base.parent / "x", lab.base / "x", Path("/tmp/x"))}
            hostile = [str(marker_dir), "../../x", f"{blocker}:results", "group:abc"]
            app = celery_app(lab)
            for n, task_id in enumerate(hostile):
                app.send_task("tasks.submit", args=[local_job(f"hostile-{n}")], task_id=task_id)
            ids = [app.AsyncResult(task_id).get(timeout=60) for task_id in hostile]
            assert all(re.fullmatch(r"\d+", job_id) for job_id in ids), ids
            assert len(set(ids + [blocker])) == 5
            for task_id, job_id in zip(hostile, ids):
                rec = record(lab, job_id)
                assert rec["client_ref"] == task_id and rec["id"] == job_id and rec["state"] == "Submitted", rec
            # queued (the board is busy), and no key but the lab's own job keys
            assert sorted(sched.queue("local-shell")) == sorted(ids)
            r = lab.r()
            assert [k for k in r.scan_iter(match="lava:{job:*") if not KEY_OF_A_JOB.match(k)] == []
            assert list(r.scan_iter(match="lava:{group:*")) == []
            assert r.type(job_key(blocker)) == "hash" and not r.exists(results_key(blocker))
            assert record(lab, blocker)["state"] == "Running"

            release.touch()
            assert wait_final(lab, blocker, 60)["state"] == "Complete"
            assert r.type(results_key(blocker)) == "string"
            for job_id in ids:
                rec = wait_final(lab, job_id, 60)
                assert rec["state"] == "Complete", rec
                assert rec["output_dir"] == str((lab.base / "jobs" / job_id).resolve())
                assert (lab.base / "jobs" / job_id / "results.yaml").is_file()
            assert (marker_dir / "marker").read_text() == "keep me"
            assert sorted(os.listdir(marker_dir)) == ["marker"]
            assert {p: snapshot(p) for p in outside} == outside
            assert sorted(os.listdir(lab.base / "jobs")) == sorted([blocker, *ids])
            # the device type still schedules: another job, from the CLI, prints the lab's id and completes
            job_file = lab.base / "after.yaml"
            job_file.write_text(local_job("after"))
            out = subprocess.run([sys.executable, "-m", "tasks.cli", "submit", str(job_file), "--wait"], cwd=ROOT,
                                 env=lab.env, capture_output=True, text=True, timeout=90)
            assert out.returncode == 0, out.stderr
            after = out.stdout.splitlines()[0]
            assert after == str(max(map(int, ids)) + 1) and out.stdout.splitlines()[-1] == f"job {after}: Complete"
            for argv in (["status", after], ["status", f"00{after}"], ["results", after], ["logs", after]):
                shown = subprocess.run([sys.executable, "-m", "tasks.cli", *argv], cwd=ROOT, env=lab.env,
                                       capture_output=True, text=True, timeout=60)
                assert shown.returncode == 0, (argv, shown.stderr)
            for bad in ("/tmp/x", f"{blocker}:results", "group:abc", hostile[0]):
                refused = subprocess.run([sys.executable, "-m", "tasks.cli", "cancel", bad], cwd=ROOT, env=lab.env,
                                         capture_output=True, text=True, timeout=60)
                assert refused.returncode == 2 and "is not a job id" in refused.stderr, refused.stderr
                assert "Traceback" not in refused.stderr
        finally:
            for child in marker_dir.iterdir():
                child.unlink()
            marker_dir.rmdir()


@pytest.mark.lab
def test_tasks_submit_with_wrong_arguments_leaves_a_record_saying_why():
    with running_lab("lab-args-") as lab:
        lab.start_worker("arg1")
        app = celery_app(lab)
        text = local_job("typed")
        cases = [([42], {}, "definition must be the job's YAML text (a string), got int 42"),
                 ([], {}, "needs the job's YAML text"),
                 ([text], {"priority": 1.5}, "priority: expected a whole number, got float 1.5"),
                 ([text], {"priority": True}, "priority: expected a whole number, got true"),
                 ([text], {"priority": "HIGH"}, "priority: 'HIGH' is not high, medium, low"),
                 ([text], {"queue_anyway": "no"}, "queue_anyway must be true or false, got str 'no'"),
                 ([text], {"bogus": 1, "priority": "high"}, "unknown keyword argument(s) 'bogus'"),
                 ([text, 50, False, "extra"], {}, "at most 3 arguments")]
        sent = [(app.send_task("tasks.submit", args=args, kwargs=kwargs).id, message)
                for args, kwargs, message in cases]
        # and priority 1e999 the way an operator sends it: JSON from `celery call`
        call = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.submit", "--args",
                               json.dumps([text]), "--kwargs", '{"priority": 1e999}'], cwd=ROOT, env=lab.env,
                              capture_output=True, text=True, timeout=60)
        assert call.returncode == 0, call.stderr
        sent.append((call.stdout.strip().splitlines()[0], "priority: expected a whole number, got float inf"))
        r = lab.r()
        for task_id, message in sent:
            failure = app.AsyncResult(task_id).get(timeout=60, propagate=False)
            job_id = re.match(r"job (\d+): ", str(failure)).group(1)
            rec = record(lab, job_id)
            assert rec["state"] == "Incomplete" and rec["error_type"] == "Job", rec
            assert message in rec["error"] and rec["error"].startswith("the job is rejected"), rec["error"]
            assert rec["client_ref"] == task_id
            assert r.zscore(LAB.jobs, job_id) is not None  # `lava-dispatch status` lists it
            status = subprocess.run([sys.executable, "-m", "tasks.cli", "status", job_id], cwd=ROOT, env=lab.env,
                                    capture_output=True, text=True, timeout=60)
            import yaml

            shown = yaml.safe_load(status.stdout)
            assert shown["state"] == "Incomplete" and message in shown["error"], status.stdout
        assert r.zcard(LAB.pending) == 0 and r.hget(board_key("arg1"), "job") == ""
        # the same task with right arguments runs
        good = app.send_task("tasks.submit", args=[text], kwargs={"priority": "low", "queue_anyway": False})
        job_id = good.get(timeout=60)
        rec = wait_final(lab, job_id, 60)
        assert rec["state"] == "Complete" and rec["priority"] == "0"
        # the same message delivered again (same task id) gets the first answer, not a second job
        jobs, last_id = r.zcard(LAB.jobs), r.get(LAB.last_id)
        app.send_task("tasks.submit", args=[text], task_id=good.id)
        done = f"Task tasks.submit[{good.id}] succeeded".encode()
        wait_for(lambda: lab.logs["arg1"].read_bytes().count(done) == 2, 60, "the second delivery to be handled")
        assert (r.zcard(LAB.jobs), r.get(LAB.last_id)) == (jobs, last_id)
        assert app.AsyncResult(good.id).get(timeout=10) == job_id


@pytest.mark.lab
def test_cli_priority_is_refused_not_coerced():
    with running_lab("lab-prio-") as lab:
        job = lab.base / "job.yaml"
        job.write_text(local_job("prio"))

        def submit(*extra):
            return subprocess.run([sys.executable, "-m", "tasks.cli", "submit", str(job), "--queue-anyway", *extra],
                                  cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=60)
        for value in ("1.5", "HIGH", "true", "101"):
            out = submit("--priority", value)
            assert out.returncode == 2 and "priority" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert lab.r().zcard(LAB.jobs) == 0
        out = submit("--priority", "75")
        assert out.returncode == 0, out.stderr
        assert record(lab, out.stdout.split()[0])["priority"] == "75"


@pytest.mark.lab
def test_sigterm_stops_a_worker_while_redis_is_down():
    with running_lab("lab-sigterm-") as lab:
        lab.start_worker("term1")
        job_id = scheduler(lab).submit(local_job("held", ["lava-test-case long --shell sleep 120"])).job_id
        wait_for(lambda: record(lab, job_id).get("current") == "lava-test-retry"
                 and any("sleep" in cmd for _, cmd in processes_mentioning(job_id)), 30, "the job's test")
        supervisor = lab.workers["term1"]
        lab.redis.kill()
        supervisor.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        supervisor.wait(45)
        assert time.monotonic() - asked < 30, "the worker took too long to stop"
        assert supervisor.returncode == 0
        state_dir = str(lab.base / "state")
        wait_for(lambda: descendants_by_env("LAVA_DISPATCH_STATE_DIR", state_dir) == [], 10,
                 "no process of the worker left")
        assert processes_mentioning(job_id) == []
        # Redis back (AOF): the job could not be ended while it was down; the board's next worker ends it.
        lab.redis.start()
        lab.start_worker("term1")
        rec = wait_final(lab, job_id, 30)
        assert rec["state"] == "Incomplete" and "worker lost" in rec["error"], rec
