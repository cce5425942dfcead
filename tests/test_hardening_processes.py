"""Nothing a job starts on the host survives it: background jobs, nohup, setsid, daemons.

A local-shell board is the dispatcher's own host, so what a test step leaves
running must end with the job, in ``lava-dispatch run`` and in a lab worker.
Every process here is tagged by a unique ``sleep`` duration (the ``markers``
fixture), started for real, seen running from outside the job, and proven
gone from /proc once the job has ended.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DEVICES, ROOT, cmdline_of, processes_matching, wait_for
from lab_helpers import local_job, running_lab

from pipeline.jobscope import CGROUP_SETTING, cgroup2_mount, cgroup_base
from pipeline.processes import ProcessRegistry, kill_stale_groups

pytestmark = pytest.mark.usefixtures("no_leftovers")

HAS_CGROUP = cgroup_base() is not None
FINAL = ("Complete", "Incomplete", "Canceled")


def spawn(registry: ProcessRegistry, argv: list[str], what: str) -> subprocess.Popen:
    """Start a helper of the job as the engine does (its own session, the job's cgroup and token)."""
    process = subprocess.Popen(argv, start_new_session=True, **registry.spawn_options())
    registry.adopt(process.pid, what)
    return process


def leaving_steps(m: dict[str, str], release: Path) -> list[str]:
    """Test steps that leave one process per way of detaching, then wait until ``release`` exists."""
    return [
        f"sleep {m['background']} &",
        f"nohup sleep {m['nohup']} >/dev/null 2>&1 &",
        f"setsid sleep {m['setsid']} &",
        f"sh -c 'setsid sh -c \"sleep {m['double-fork']} &\" &'",
        "python3 -c 'import os; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0); "
        f"os.execvp(\"sleep\", [\"sleep\", \"{m['daemon']}\"])'",
        f"bash -c 'sleep {m['disown']} & disown'",
        # The test looks at them from outside, then lets the job end (a wait with a deadline).
        f"n=0; while [ ! -e {release} ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done",
        f"lava-test-case released --shell test -e {release}",
    ]


def new_markers(markers) -> dict[str, str]:
    kinds = ("background", "nohup", "setsid", "double-fork", "daemon", "disown")
    return {kind: markers(300 + index) for index, kind in enumerate(kinds)}


def sleeping(marker: str) -> list[int]:
    """The live ``sleep MARKER`` processes (not the shells whose command lines mention it)."""
    return [pid for pid in processes_matching(marker) if cmdline_of(pid) == f"sleep {marker}"]


def running(m: dict[str, str]) -> dict[str, int]:
    """kind -> pid of the marked sleeps alive now."""
    return {kind: pids[0] for kind, marker in m.items() if (pids := sleeping(marker))}


def all_running(m: dict[str, str]) -> dict[str, int] | None:
    found = running(m)
    return found if len(found) == len(m) else None


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as handle:
        return next(line[3:].strip() for line in handle if line.startswith("0::"))


def start_run(tmp_path: Path, job_text: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """``lava-dispatch run`` as a real process (as conftest.run_job, without waiting for it)."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job_text)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", str(job_file), "--device",
                                str(DEVICES / "local01.yaml"), "--output-dir", str(output)], cwd=ROOT,
                               env={**os.environ, "TMPDIR": str(scratch), **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, output


def wait_while_running(process: subprocess.Popen, condition, timeout: float, what: str):
    """wait_for ``condition`` while the run goes on; a run that ends first fails the test with its output."""
    value = wait_for(lambda: condition() or process.poll() is not None, timeout, what)
    if process.poll() is not None and not condition():
        raise AssertionError(f"the run ended (exit {process.returncode}) before {what}: {process.stdout.read()}")
    return value


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
        return out
    finally:
        if process.poll() is None:  # the wait failed: the run must not outlive the test
            process.kill()
            process.communicate()


def messages(output: Path) -> list[str]:
    return [r["msg"] for r in yaml.safe_load((output / "output.yaml").read_text()) if isinstance(r["msg"], str)]


def stopped_line(lines: list[str]) -> str:
    found = [line for line in lines if "process(es) the job left running" in line]
    assert len(found) == 1, lines[-10:]
    return found[0]


# ---------------------------------------------------------------- lava-dispatch run


@pytest.mark.parametrize("cgroup", ["auto", "off"])
def test_run_ends_everything_the_test_left_running(tmp_path, markers, cgroup):
    m = new_markers(markers)
    release = tmp_path / "release"
    process, output = start_run(tmp_path, local_job("leaves", leaving_steps(m, release)), {CGROUP_SETTING: cgroup})
    try:
        pids = wait_while_running(process, lambda: all_running(m), 60, "the test's six background processes")
        groups = {cgroup_of(pid) for pid in pids.values()}
        if cgroup == "auto" and HAS_CGROUP:
            # One cgroup of the job's own holds them all, whichever way they detached.
            assert len(groups) == 1 and "/lava-dispatch-job-" in next(iter(groups)), groups
        release.touch()
    finally:
        out = finish(process)
    assert process.returncode == 0, out
    assert running(m) == {}  # already when the run returns: no grace period for the test to wait out
    line = stopped_line(messages(output))
    # The plain background sleeps may already have died of the console's hang-up when the shell
    # went away (which of the two ends them first is a race); the detached ones only the clean-up ends.
    detached = ("nohup", "setsid", "double-fork", "daemon")
    assert all(f"sleep {m[kind]} (pid {pids[kind]})" in line for kind in detached), line
    listed = re.findall(r"sleep (\S+) \(pid (\d+)\)", line)
    assert {(marker, int(pid)) for marker, pid in listed} <= {(m[kind], pids[kind]) for kind in m}, line
    if cgroup == "auto" and HAS_CGROUP:
        assert not (cgroup2_mount() / next(iter(groups)).lstrip("/")).exists(), "the job's cgroup is removed"


@pytest.mark.parametrize("which", ["action", "job"])
def test_a_hanging_step_that_times_out_leaves_nothing(tmp_path, markers, which):
    marker = markers(1000)
    job = yaml.safe_load(local_job("hangs", [f"sleep {marker}"], timeout_s=60))
    if which == "action":
        job["timeouts"]["actions"] = {"lava-test-shell": {"seconds": 5}}
    else:
        job["timeouts"] = {"job": {"seconds": 12}, "action": {"seconds": 12}}  # room for a slow boot
    process, output = start_run(tmp_path, yaml.safe_dump(job))
    try:
        wait_while_running(process, lambda: sleeping(marker), 30, "the hanging sleep")
    finally:
        out = finish(process)
    assert process.returncode == 1, out
    expected = "lava-test-shell: timeout. 5 seconds" if which == "action" else "job timeout"
    assert any(expected in line for line in messages(output)), out
    assert processes_matching(marker) == []


# ---------------------------------------------------------------- the helpers themselves


@pytest.mark.parametrize("cgroup", ["auto", "off"])
def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(markers, monkeypatch, cgroup):
    monkeypatch.setenv(CGROUP_SETTING, cgroup)
    marker = markers(310)
    registry = ProcessRegistry()
    # The ignored SIGTERM is inherited through exec; setsid takes it out of the helper's group and session.
    spawn(registry, ["sh", "-c", f"trap '' TERM; setsid sleep {marker} &"], "helper")
    wait_for(lambda: sleeping(marker), 10, "the detached sleep")
    started = time.monotonic()
    left = registry.kill_all(grace=0.5)
    elapsed = time.monotonic() - started
    assert processes_matching(marker) == []
    assert any(f"sleep {marker}" in entry for entry in left), left
    assert elapsed < 4, f"the cleanup took {elapsed:.1f} s (0.5 s grace, then SIGKILL)"


def test_the_sessions_of_helpers_are_searched_without_a_cgroup(markers, monkeypatch):
    """Without a cgroup, a child that dropped the token (``env -i``) is still in its helper's session."""
    monkeypatch.setenv(CGROUP_SETTING, "off")
    marker = markers(311)
    registry = ProcessRegistry()
    helper = spawn(registry, ["sh", "-c", f"env -i sleep {marker} &"], "helper")
    helper.wait(10)
    registry.forget(helper.pid)  # the helper is gone: only its session is left to find the sleep by
    wait_for(lambda: sleeping(marker), 10, "the sleep")
    assert registry.scope.cgroup is None
    registry.kill_all(grace=0.5)
    assert processes_matching(marker) == []


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2 on this host")
def test_the_cgroup_ends_a_daemon_that_drops_the_token_and_the_session(markers):
    marker = markers(312)
    registry = ProcessRegistry()
    spawn(registry, ["sh", "-c", f"env -i setsid sh -c 'sleep {marker} &' &"], "helper")
    pid = wait_for(lambda: sleeping(marker), 10, "the daemon")[0]
    group = registry.scope.cgroup
    assert group is not None and cgroup_of(pid) == "/" + str(group.relative_to(cgroup2_mount()))
    left = registry.kill_all(grace=0.5)
    assert processes_matching(marker) == []
    assert any(f"sleep {marker}" in entry for entry in left)
    assert not group.exists()


@pytest.mark.parametrize("cgroup", ["auto", "off"])
def test_a_restarted_worker_ends_what_a_crashed_one_recorded(tmp_path, markers, monkeypatch, cgroup):
    monkeypatch.setenv(CGROUP_SETTING, cgroup)
    marker = markers(313)
    pid_file = tmp_path / "board.pids"
    registry = ProcessRegistry(pid_file=pid_file)
    spawn(registry, ["sh", "-c", f"setsid sh -c 'sleep {marker} &' &"], "power_on")
    wait_for(lambda: sleeping(marker), 10, "the daemon")
    recorded = pid_file.read_text()
    assert f"token {registry.scope.token}\n" in recorded
    group = registry.scope.cgroup
    if cgroup == "auto" and HAS_CGROUP:
        assert f"cgroup {group}\n" in recorded
    # The worker that held ``registry`` is gone; its successor reads only the file.
    killed = kill_stale_groups(pid_file)
    assert processes_matching(marker) == []
    assert any(f"sleep {marker}" in entry for entry in killed), killed
    assert not pid_file.exists()
    assert group is None or not group.exists()


# ---------------------------------------------------------------- the lab


@pytest.fixture
def lab_env(request):
    with running_lab(extra_env={CGROUP_SETTING: request.param}) as the_lab:
        yield the_lab


def wait_final(lab, job_id: str, timeout: float = 60) -> dict:
    from tasks.records import get_job

    return wait_for(lambda: (rec := get_job(lab.r(), job_id))["state"] in FINAL and rec, timeout, f"job {job_id}")


@pytest.mark.lab
@pytest.mark.parametrize("lab_env", ["auto", "off"], indirect=True)
@pytest.mark.parametrize("ending", ["finished", "canceled"])
def test_lab_job_ends_everything_the_test_left_running(lab_env, tmp_path, markers, ending):
    from tasks.records import read_log
    from tasks.scheduler import Lab as Scheduler

    lab = lab_env
    lab.start_worker("left1")
    scheduler = Scheduler(lab.r())
    m = new_markers(markers)
    release = tmp_path / "release"
    job_id = scheduler.submit(local_job("leaves", leaving_steps(m, release))).job_id
    pids = wait_for(lambda: all_running(m), 60, "the test's six background processes")
    if ending == "finished":
        release.touch()
    else:
        assert scheduler.cancel(job_id) == ("Canceling", "left1")
    rec = wait_final(lab, job_id)
    assert rec["state"] == ("Complete" if ending == "finished" else "Canceled"), rec
    assert running(m) == {}  # the job's end is stored after its processes are gone
    line = stopped_line([str(r["msg"]) for r in read_log(lab.r(), job_id)])
    # The console's hang-up may end the terminal's own background children first (a race, as in
    # the local run above); what left the terminal's job is ended by the sweep.
    swept = ("nohup", "setsid", "double-fork", "daemon")
    assert all(f"(pid {pids[kind]})" in line for kind in swept), line
    lab.wait_idle("left1", 10)


@pytest.mark.lab
@pytest.mark.parametrize("lab_env", ["auto"], indirect=True)
def test_a_crashed_worker_s_leftovers_end_with_it(lab_env, tmp_path, markers):
    from tasks.scheduler import Lab as Scheduler

    lab = lab_env
    lab.start_worker("crash1")
    scheduler = Scheduler(lab.r())
    m = new_markers(markers)
    job_id = scheduler.submit(local_job("leaves", leaving_steps(m, tmp_path / "never"))).job_id
    wait_for(lambda: all_running(m), 60, "the test's six background processes")
    os.kill(lab.child_pid("crash1"), signal.SIGKILL)
    assert wait_final(lab, job_id)["state"] == "Incomplete"
    # The supervisor kills what the worker recorded (its job's cgroup and token) before it restarts it.
    wait_for(lambda: running(m) == {}, 30, "the crashed job's leftovers to end")
    lab.wait_idle("crash1", 60)
