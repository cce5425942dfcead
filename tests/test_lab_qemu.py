"""The lab with emulated QEMU boards (sample_jobs/devices/kvm01.yaml) next to local-shell boards."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest
from conftest import kvm_images
from lab_helpers import KVM_DEVICE, LOCAL_DEVICE, local_job, processes_mentioning, wait_for
from test_lab import assert_each_step_ran_once, lab, record, scheduler, wait_final  # noqa: F401 - fixture

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


def kvm_job(images, name: str = "kvm-lab", test_steps: list[str] | None = None, timeout_min: int = 8) -> str:
    steps = "\n".join(f"                - {s}" for s in (test_steps or ["lava-test-case kernel --shell uname -r",
                                                                      "lava-test-case proc --shell test -d /proc/self"]))
    return f"""\
device_type: kvm
job_name: {name}
timeouts:
  job: {{minutes: {timeout_min}}}
  action: {{minutes: 3}}
actions:
  - deploy:
{kvm_images(images)}  - boot:
      method: qemu
      media: tmpfs
  - test:
      definitions:
        - from: inline
          name: smoke
          path: inline/smoke.yaml
          repository:
            metadata: {{format: Lava-Test Test Definition 1.0, name: smoke}}
            run:
              steps:
{steps}
"""


def qemu_of(job_id: str) -> list[int]:
    return [pid for pid, cmd in processes_mentioning(job_id) if "qemu-system" in cmd]


def test_eight_jobs_on_two_qemu_and_two_local_boards(lab, images):
    for name, device in (("qemu1", KVM_DEVICE), ("qemu2", KVM_DEVICE), ("locA", LOCAL_DEVICE),
                         ("locB", LOCAL_DEVICE)):
        lab.start_worker(name, device, wait=False)
    for name in ("qemu1", "qemu2", "locA", "locB"):
        lab.wait_idle(name, 60)
    sched = scheduler(lab)
    jobs = []
    for i in range(4):
        jobs.append(sched.submit(kvm_job(images, f"kvm{i}")).job_id)
        jobs.append(sched.submit(local_job(f"local{i}", ["lava-test-case nap --shell sleep 1"])).job_id)
    spans = defaultdict(list)
    for job_id in jobs:
        rec = wait_final(lab, job_id, 300)
        assert rec["state"] == "Complete", rec
        ran = assert_each_step_ran_once(lab, job_id)
        assert [s["step"] for s in ran] == list(range(rec["nactions"] + 2))
        assert {(s["board"], s["pid"]) for s in ran} == {(rec["board"], rec["worker_pid"])}
        spans[rec["board"]].append((ran[0]["t0"], ran[-1]["t1"], job_id))
    assert {b for b in spans if b.startswith("qemu")} == {"qemu1", "qemu2"}
    for board, intervals in spans.items():
        intervals.sort()
        for (_, end, a), (start, _, b) in zip(intervals, intervals[1:]):
            assert end <= start, f"board {board} ran {a} and {b} at once"
        expected = "kvm" if board.startswith("qemu") else "local-shell"
        assert {record(lab, j)["device_type"] for _, _, j in intervals} == {expected}


def test_kill_9_of_a_qemu_board_worker_mid_boot(lab, images):
    lab.start_worker("qkill", KVM_DEVICE)
    sched = scheduler(lab)
    victim = sched.submit(kvm_job(images, "victim")).job_id

    def booting():
        rec = record(lab, victim)
        assert rec["state"] not in ("Complete", "Incomplete", "Canceled"), rec
        return rec.get("current") == "boot-image-retry" and qemu_of(victim)
    wait_for(booting, 120, "QEMU booting")
    child = lab.child_pid("qkill")
    killed_at = time.monotonic()
    os.kill(child, signal.SIGKILL)
    rec = wait_final(lab, victim, 30)
    assert time.monotonic() - killed_at < 30
    assert rec["state"] == "Incomplete" and rec["error_type"] == "Infrastructure"
    assert f"qkill@{os.uname()[1]}" in rec["error"] and str(child) in rec["error"] and "worker lost" in rec["error"]
    wait_for(lambda: not qemu_of(victim), 10, "no QEMU of the killed job")
    lab.wait_idle("qkill", 60)
    assert not (lab.base / "tmp" / "lava-dispatch-qkill" / victim).exists()  # its downloads are gone
    ran = assert_each_step_ran_once(lab, victim)
    assert [s["name"] for s in ran] == ["start", "deployimages"]  # boot never finished nor ran again
    nxt = sched.submit(kvm_job(images, "after")).job_id
    assert wait_final(lab, nxt, 300)["state"] == "Complete"


def test_cancel_of_a_running_qemu_job(lab, images):
    lab.start_worker("qcan", KVM_DEVICE)
    sched = scheduler(lab)
    job_id = sched.submit(kvm_job(images, "long", ["lava-test-case long --shell sleep 300"])).job_id

    def testing():
        rec = record(lab, job_id)
        assert rec["state"] not in ("Complete", "Incomplete", "Canceled"), rec
        return rec.get("current") == "lava-test-retry" and qemu_of(job_id)
    wait_for(testing, 180, "the QEMU job's test running")
    asked = time.monotonic()
    assert sched.cancel(job_id)[0] == "Canceling"
    rec = wait_final(lab, job_id, 5)
    assert rec["state"] == "Canceled" and time.monotonic() - asked < 5
    assert not qemu_of(job_id)
    lab.wait_idle("qcan", 5)
