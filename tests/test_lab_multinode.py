"""Multinode in the lab: groups of sub-jobs on board workers, coordinated through Redis.

Boards are local-shell boards (sample_jobs/devices/local01.yaml under
several names) unless the test says otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import kvm_images
from lab_helpers import ROOT, processes_mentioning, running_lab, wait_for

from tasks.keys import group_key, job_key, log_key

pytestmark = pytest.mark.lab

FINAL = ("Complete", "Incomplete", "Canceled")


@pytest.fixture
def lab():
    with running_lab("lab-mn-", extra_env={"LAVA_DISPATCH_GROUP_END_SECONDS": "2"}) as the_lab:
        yield the_lab


def scheduler(lab):
    from tasks.scheduler import Lab as Scheduler

    return Scheduler(lab.r())


def state(lab, job_id):
    return lab.r().hget(job_key(job_id), "state")


def wait_group(lab, jobs, timeout):
    wait_for(lambda: all(state(lab, job) in FINAL for job in jobs), timeout, f"group {jobs} to end")
    return {job: lab.r().hgetall(job_key(job)) for job in jobs}


def results(lab, job_id):
    from tasks.records import job_results

    return job_results(lab.r(), job_id)


def group_keys(lab, group):
    return list(lab.r().scan_iter(match=f"lava:mn:{{{group}}}*"))


def multinode_job(roles: dict[str, int], steps: dict[str, list[str]], timeout_s: int = 120,
                  protocol_timeout: int = 60) -> str:
    """A multinode job on local-shell boards: each role boots and runs its own steps."""
    import yaml

    job = {
        "job_name": "lab-multinode",
        "timeouts": {"job": {"seconds": timeout_s}, "action": {"seconds": timeout_s}},
        "protocols": {"lava-multinode": {
            "roles": {role: {"device_type": "local-shell", "count": count} for role, count in roles.items()},
            "timeout": {"seconds": protocol_timeout}}},
        "actions": [{"boot": {"role": list(roles), "method": "minimal"}}] + [
            {"test": {"role": [role], "definitions": [{
                "from": "inline", "name": role, "path": f"{role}.yaml",
                "repository": {"metadata": {"name": role}, "run": {"steps": role_steps}}}]}}
            for role, role_steps in steps.items()],
    }
    return yaml.safe_dump(job, sort_keys=False)


SERVER_CLIENT_STEPS = {
    "server": ["lava-send ipv4 ipaddr=10.0.2.15", "lava-test-case sent --result pass"],
    "client": ["lava-wait ipv4",
               "lava-test-case got-address --shell grep -q ipaddr=10.0.2.15 $TMPDIR/lava_multi_node_cache.txt"],
}


def test_a_group_runs_on_two_boards_and_its_keys_expire(lab):
    lab.start_worker("mna")
    lab.start_worker("mnb")
    sched = scheduler(lab)
    submitted = sched.submit(multinode_job({"server": 1, "client": 1}, SERVER_CLIENT_STEPS))
    group = submitted.job_id
    assert len(submitted.members) == 2 and len(submitted.assignments) == 2
    assert {a.board for a in submitted.assignments} == {"mna", "mnb"}
    records = wait_group(lab, submitted.members, 60)
    assert {r["state"] for r in records.values()} == {"Complete"}, records
    by_role = {r["role"]: job for job, r in records.items()}
    assert next(r for r in results(lab, by_role["client"]) if r["case"] == "got-address")["result"] == "pass"
    # status, results and logs work on the group id
    env = {**os.environ}
    status = subprocess.run([sys.executable, "-m", "tasks.cli", "status", group], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    assert status.returncode == 0 and "group: " + group in status.stdout and "state: Complete" in status.stdout
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "results", group], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    assert "member: client-1" in out.stdout and "got-address" in out.stdout
    logs = subprocess.run([sys.executable, "-m", "tasks.cli", "logs", group], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    assert "[server-1]" in logs.stdout and "[client-1]" in logs.stdout
    wait_for(lambda: not group_keys(lab, group), 20, "the group's coordination keys to expire")


def test_fifty_barriers_and_wait_all_rounds_on_four_boards(lab):
    for name in ("mn1", "mn2", "mn3", "mn4"):
        lab.start_worker(name)
    steps = []
    for n in range(50):
        steps += [f"lava-sync b{n}", f"lava-send r{n} from=$(lava-self)", f"lava-wait-all r{n}",
                  f"test $(grep -c ':from=' $TMPDIR/lava_multi_node_cache.txt) -eq 3 || lava-test-case r{n} --result fail"]
    steps.append("lava-test-case rounds --result pass")
    submitted = scheduler(lab).submit(multinode_job({"node": 4}, {"node": steps}, timeout_s=300))
    records = wait_group(lab, submitted.members, 240)
    assert {r["state"] for r in records.values()} == {"Complete"}, records
    for job in submitted.members:
        cases = [r["case"] for r in results(lab, job) if r["suite"] != "lava"]
        assert cases == ["rounds"], (job, cases)


def test_a_killed_member_makes_the_others_time_out_naming_it(lab):
    for name in ("mk1", "mk2", "mk3"):
        lab.start_worker(name)
    steps = {"node": ["lava-sync ready", "lava-test-case waiting --shell sleep 3", "lava-sync done"]}
    submitted = scheduler(lab).submit(multinode_job({"node": 3}, steps, protocol_timeout=25))
    group = submitted.job_id
    victim_job = next(a.job for a in submitted.assignments if a.board == "mk1")
    wait_for(lambda: "waiting" in "".join(str(r) for r in lab.r().xrange(log_key(victim_job))), 60,
             "the victim's test to be running")
    os.kill(lab.child_pid("mk1"), signal.SIGKILL)
    started = time.monotonic()
    records = wait_group(lab, submitted.members, 90)
    assert time.monotonic() - started < 80
    assert records[victim_job]["state"] == "Incomplete" and "worker lost" in records[victim_job]["error"]
    member = records[victim_job]["member"]
    for job, record in records.items():
        if job != victim_job:
            assert record["state"] == "Incomplete", record
            assert "lava-sync 'done': timeout" in record["error"] and member in record["error"], record["error"]
    wait_for(lambda: processes_mentioning(victim_job) == [], 15, "the victim's helpers to be gone")
    wait_for(lambda: not group_keys(lab, group), 20, "the group's coordination keys to expire")


def test_two_groups_needing_both_boards_both_finish(lab):
    lab.start_worker("dl1")
    lab.start_worker("dl2")
    sched = scheduler(lab)
    job = multinode_job({"a": 1, "b": 1}, {"a": ["lava-sync x", "lava-test-case a --result pass"],
                                           "b": ["lava-sync x", "lava-test-case b --result pass"]})
    first = sched.submit(job)
    second = sched.submit(job)
    assert len(first.assignments) == 2 and second.assignments == []  # all or nothing: the second waits whole
    records = wait_group(lab, first.members + second.members, 120)
    assert {r["state"] for r in records.values()} == {"Complete"}, records
    first_end = max(float(records[j]["ended"]) for j in first.members)
    second_start = min(float(records[j]["started"]) for j in second.members)
    assert second_start >= first_end - 1


def test_canceling_one_member_cancels_the_group(lab):
    lab.start_worker("cx1")
    lab.start_worker("cx2")
    submitted = scheduler(lab).submit(multinode_job({"node": 2}, {"node": ["lava-sync s", "echo SLEEPING-NOW", "sleep 120"]}))
    wait_for(lambda: all(state(lab, j) == "Running" for j in submitted.members), 60, "the group to run")
    wait_for(lambda: all("SLEEPING-NOW" in "".join(str(x) for x in lab.r().xrange(log_key(j)))
                         for j in submitted.members), 60, "the test to be running")
    result = subprocess.run([sys.executable, "-m", "tasks.cli", "cancel", submitted.members[0]],
                            capture_output=True, text=True, env=os.environ, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    started = time.monotonic()
    records = wait_group(lab, submitted.members, 30)
    assert time.monotonic() - started < 10
    assert {r["state"] for r in records.values()} == {"Canceled"}


def test_a_queued_group_waits_for_all_its_boards_without_holding_one(lab):
    lab.start_worker("q1")
    sched = scheduler(lab)
    busy = sched.submit(multinode_job({"solo": 1}, {"solo": ["sleep 3"]}))
    pair = sched.submit(multinode_job({"a": 1, "b": 1}, {"a": ["true"], "b": ["true"]}), queue_anyway=True)
    assert pair.assignments == []
    wait_group(lab, busy.members, 60)
    lab.wait_idle("q1", 30)  # freed: the pair still cannot be placed on one board, so it holds none
    assert lab.board("q1")["job"] == ""
    lab.start_worker("q2")
    records = wait_group(lab, pair.members, 60)
    assert {r["state"] for r in records.values()} == {"Complete"}
    assert json.loads(lab.r().hget(group_key(pair.job_id), "members"))


def seed_server_client_job(images) -> str:
    """The specification's lava-start example on the emulated x86_64 board."""
    images_form = "\n" + kvm_images(images).rstrip()
    return f"""
job_name: seed-server-client
timeouts:
  job: {{minutes: 10}}
  action: {{minutes: 3}}
protocols:
  lava-multinode:
    roles:
      server: {{device_type: kvm, count: 1}}
      client: {{device_type: kvm, count: 1}}
    timeout: {{minutes: 5}}
actions:
  - deploy:
      role: [server]{images_form}
  - deploy:
      role: [client]{images_form}
      protocols:
        lava-multinode:
          - request: lava-start
            expect_role: server
            timeout: {{minutes: 5}}
          - api: lava-wait
            id: ipv4
            key: ipaddr
  - boot:
      role: [server, client]
      method: qemu
      media: tmpfs
  - test:
      role: [server]
      protocols:
        lava-multinode:
          api: lava-start
          roles: [client]
      definitions:
        - from: inline
          name: server
          path: server.yaml
          repository:
            metadata: {{name: server}}
            run:
              steps:
                - lava-send ipv4 ipaddr=$(ifconfig eth0 | sed -n 's/.*inet addr:\\([0-9.]*\\).*/\\1/p')
                - lava-test-case address-sent --result pass
  - test:
      role: [client]
      definitions:
        - from: inline
          name: client
          path: client.yaml
          repository:
            metadata: {{name: client}}
            run:
              steps:
                - lava-test-case address-from-deploy --shell test "$ipaddr" = 10.0.2.15
                - lava-wait ipv4
                - lava-test-case address-from-wait --shell grep -q ipaddr=10.0.2.15 /tmp/lava_multi_node_cache.txt
"""


@pytest.mark.qemu
def test_seed_server_client_example_on_two_qemu_boards(lab, images):
    from lab_helpers import KVM_DEVICE

    lab.start_worker("qsrv", KVM_DEVICE)
    lab.start_worker("qcli", KVM_DEVICE)
    submitted = scheduler(lab).submit(seed_server_client_job(images))
    records = wait_group(lab, submitted.members, 300)
    assert {r["state"] for r in records.values()} == {"Complete"}, records
    by_role = {r["role"]: job for job, r in records.items()}
    client = {r["case"]: r["result"] for r in results(lab, by_role["client"])}
    assert client["address-from-deploy"] == "pass" and client["address-from-wait"] == "pass"
    assert {r["case"]: r["result"] for r in results(lab, by_role["server"])}["address-sent"] == "pass"
    from tasks.records import read_log

    client_log = [str(r["msg"]) for r in read_log(lab.r(), by_role["client"])]
    assert any("delayed until role 'server'" in m for m in client_log)
    assert {records[j]["board"] for j in submitted.members} == {"qsrv", "qcli"}
    wait_for(lambda: all(not processes_mentioning(j) for j in submitted.members), 15, "no QEMU left")


@pytest.fixture
def two_hosts():
    """Two network namespaces, each joined to this one by a veth pair: two hosts of a small lab network."""
    tag = f"{os.getpid() % 10000}"
    hosts = []
    for index, name in enumerate(("a", "b"), start=1):
        ns, here, there = f"lvd{tag}{name}", f"lvd{tag}{name}0", f"lvd{tag}{name}1"
        subnet = f"10.213.{(os.getpid() % 200) + index}"
        commands = [
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
            ["ip", "link", "set", there, "netns", ns],
            ["ip", "addr", "add", f"{subnet}.1/24", "dev", here],
            ["ip", "link", "set", here, "up"],
            ["ip", "-n", ns, "addr", "add", f"{subnet}.2/24", "dev", there],
            ["ip", "-n", ns, "link", "set", there, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ]
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        hosts.append({"ns": ns, "link": here, "server_ip": f"{subnet}.1"})
    yield hosts
    for host in hosts:
        subprocess.run(["ip", "netns", "del", host["ns"]], capture_output=True)
        subprocess.run(["ip", "link", "del", host["link"]], capture_output=True)


def test_a_group_across_two_hosts_reaching_redis_over_the_network(two_hosts):
    # Off the loopback, Redis wants a password (as a lab's should have).
    with running_lab("lab-netns-", password="lab-secret",
                     extra=["--bind", "127.0.0.1", *[h["server_ip"] for h in two_hosts]]) as lab:
        workers = []
        try:
            for host, board in zip(two_hosts, ("hosta", "hostb")):
                url = f"redis://:lab-secret@{host['server_ip']}:{lab.redis.port}/0"
                log = open(lab.base / f"worker-{board}.log", "wb")
                workers.append(subprocess.Popen(
                    ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "tasks.cli", "worker", "--device",
                     str(ROOT / "sample_jobs/devices/local01.yaml"), "--name", board], cwd=ROOT,
                    env={**lab.env, "LAVA_DISPATCH_REDIS_URL": url}, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True))
                lab.logs[board] = lab.base / f"worker-{board}.log"
            for board in ("hosta", "hostb"):
                try:
                    lab.wait_idle(board, 60)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}: {lab.logs[board].read_text()[-3000:]}") from None
            # Each worker really lives in its own network namespace (its own host).
            namespaces = {os.readlink(f"/proc/{lab.child_pid(b)}/ns/net") for b in ("hosta", "hostb")}
            assert len(namespaces | {os.readlink("/proc/self/ns/net")}) == 3
            steps = {"left": ["lava-sync meet", "lava-send hello side=left", "lava-wait-all hello right",
                              "lava-test-case heard-right --shell grep -q side=right "
                              "$TMPDIR/lava_multi_node_cache.txt"],
                     "right": ["lava-sync meet", "lava-send hello side=right", "lava-wait-all hello left",
                               "lava-test-case heard-left --shell grep -q side=left "
                               "$TMPDIR/lava_multi_node_cache.txt"]}
            submitted = scheduler(lab).submit(multinode_job({"left": 1, "right": 1}, steps))
            records = wait_group(lab, submitted.members, 90)
            assert {r["state"] for r in records.values()} == {"Complete"}, records
            assert {r["board"] for r in records.values()} == {"hosta", "hostb"}
            for job in submitted.members:
                assert [r["result"] for r in results(lab, job) if r["suite"] != "lava"] == ["pass"]
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
