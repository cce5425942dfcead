"""The real lavacli (from PyPI) against ``lava-dispatch server`` and a lab of real local-shell workers.

One lab and server for the module (two boards); every lavacli call is a
process given ``--uri http://USER:TOKEN@127.0.0.1:PORT/RPC2``. Waits are
conditions with deadlines (lavacli's own ``--polling 1`` is the client's).
"""

from __future__ import annotations

import re
import xmlrpc.client

import pytest
import yaml
from lab_helpers import local_job, wait_for
from server_lab import lab_server, lavacli

from tasks.keys import board_key

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def served():
    with lab_server("server-lavacli-", boards=("loc1", "loc2")) as lab:
        yield lab


def job_file(served, name: str, steps: list[str], **options) -> str:
    path = served.lab.base / f"{name}.yaml"
    path.write_text(local_job(name, steps, **options))
    return str(path)


def show(served, job_id: str) -> dict:
    out = lavacli(served, "jobs", "show", job_id).stdout
    return dict(re.match(r"^([\w -]+?)\s*: (.*)$", line).groups() for line in out.splitlines() if " : " in line)


def wait_running(served, job_id: str) -> None:
    wait_for(lambda: served.rpc().scheduler.jobs.show(job_id)["state"] == "Running", 60, f"job {job_id} running")


def test_version_whoami_and_credentials(served):
    assert lavacli(served, "system", "version").stdout.strip() == "2025.12"
    assert lavacli(served, "system", "whoami").stdout.strip() == "alice"
    wrong = lavacli(served, "system", "version", check=False, user=None)
    assert wrong.returncode == 0  # anonymous: allowed to read
    served.tokens["mallory"] = "not-a-token"
    refused = lavacli(served, "system", "version", user="mallory", check=False)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr


def test_submit_follow_show_definition_logs_results(served):
    path = job_file(served, "follow-me", ["lava-test-case first --shell true", "echo MIDDLE-OF-THE-JOB",
                                          "lava-test-case second --shell false",
                                          "lava-test-case speed --result pass --measurement 42.5 --units MB/s"])
    submitted = lavacli(served, "jobs", "submit", path, "--follow", "--polling", "1")
    job_id = re.search(r"end: job (\d+) Complete", submitted.stdout).group(1)
    assert "MIDDLE-OF-THE-JOB" in submitted.stdout
    details = show(served, job_id)
    assert details["id"] == job_id and details["state"] == "Finished" and details["Health"] == "Complete"
    assert details["submitter"] == "alice" and details["description"] == "follow-me"
    assert details["device"] in ("loc1", "loc2") and details["device-type"] == "local-shell"
    assert details["visibility"] == "Public" and re.fullmatch(r"\d{8}T\d\d:\d\d:\d\d", details["end time"])
    assert lavacli(served, "jobs", "definition", job_id).stdout.rstrip("\n") == open(path).read().rstrip("\n")
    logs = lavacli(served, "jobs", "logs", job_id, "--no-follow", "--raw").stdout
    records = yaml.safe_load(logs)
    assert all(set(r) >= {"dt", "lvl", "msg"} for r in records) and any(
        "MIDDLE-OF-THE-JOB" in str(r["msg"]) for r in records)
    tail = lavacli(served, "jobs", "logs", job_id, "--start", str(len(records) - 2), "--polling", "1").stdout
    assert len(tail.strip().splitlines()) == 2 and f"end: job {job_id} Complete" in tail
    results = lavacli(served, "results", job_id).stdout
    assert "* 0_lab.first [pass]" in results and "* 0_lab.second [fail]" in results
    assert "* lava.job [pass]" in results
    cases = yaml.safe_load(lavacli(served, "results", job_id, "--yaml").stdout)
    speed = next(c for c in cases if c["name"] == "speed")
    assert (speed["measurement"], speed["unit"], speed["suite"], speed["job"]) == ("42.5", "MB/s", "0_lab", job_id)
    suite = yaml.safe_load(lavacli(served, "results", job_id, "lava", "--yaml").stdout)
    assert {c["name"] for c in suite} == {"0_lab", "job"}
    assert lavacli(served, "results", job_id, "0_lab", "second").stdout.strip() == "fail"


def test_logs_follow_and_wait_on_a_running_job(served):
    path = job_file(served, "slow", ["echo BEFORE-THE-NAP", "sleep 3", "echo AFTER-THE-NAP",
                                     "lava-test-case woke --shell true"])
    job_id = lavacli(served, "jobs", "submit", path).stdout.strip()
    assert job_id.isdigit()
    wait_running(served, job_id)
    followed = lavacli(served, "jobs", "logs", job_id, "--polling", "1")  # follows until the job ends
    assert "BEFORE-THE-NAP" in followed.stdout and "AFTER-THE-NAP" in followed.stdout
    assert f"end: job {job_id} Complete" in followed.stdout
    waited = lavacli(served, "jobs", "wait", job_id, "--polling", "1")
    assert waited.returncode == 0
    path = job_file(served, "slow2", ["sleep 2", "lava-test-case woke --shell true"])
    job_id = lavacli(served, "jobs", "submit", path).stdout.strip()
    waited = lavacli(served, "jobs", "wait", job_id, "--polling", "1")
    assert "Running" in waited.stdout or "Submitted" in waited.stdout or "Scheduled" in waited.stdout
    assert served.rpc().scheduler.jobs.show(job_id)["health"] == "Complete"


def test_cancel_own_job_not_anothers(served):
    path = job_file(served, "long", ["lava-test-case nap --shell sleep 120"])
    job_id = lavacli(served, "jobs", "submit", path).stdout.strip()
    wait_running(served, job_id)
    refused = lavacli(served, "jobs", "cancel", job_id, user="bob", check=False)
    assert refused.returncode == 1 and "Permission denied" in refused.stderr, refused.stderr
    assert served.rpc().scheduler.jobs.show(job_id)["state"] == "Running"
    lavacli(served, "jobs", "cancel", job_id)
    lavacli(served, "jobs", "wait", job_id, "--polling", "1", timeout=60)
    details = show(served, job_id)
    assert (details["state"], details["Health"]) == ("Finished", "Canceled")


def test_devices_list_show_and_health_update(served):
    listed = lavacli(served, "devices", "list").stdout
    assert "* loc1 (local-shell): Idle,Good" in listed or "* loc1 (local-shell): Running,Good" in listed
    assert "* loc2 (local-shell)" in listed
    shown = lavacli(served, "devices", "show", "loc2").stdout
    assert re.search(r"^name\s+: loc2$", shown, re.M) and re.search(r"^device-type : local-shell$", shown, re.M)
    for key in ("state", "health", "health job", "description", "pipeline", "device-dict", "worker", "current job",
                "tags"):
        assert re.search(rf"^{key}\s*: ", shown, re.M), key
    refused = lavacli(served, "devices", "update", "loc2", "--health", "MAINTENANCE", check=False)
    assert refused.returncode == 1 and "admin" in refused.stderr
    lavacli(served, "devices", "update", "loc2", "--health", "MAINTENANCE", "--reason", "a loose cable", user="root")
    assert re.search(r"^health\s+: Maintenance$", lavacli(served, "devices", "show", "loc2").stdout, re.M)
    assert "* loc2 (local-shell): Idle,Maintenance" in lavacli(served, "devices", "list").stdout
    assert served.redis().hget(board_key("loc2"), "health") == "Maintenance"
    from server.archive import health_history

    change = health_history("loc2", engine=served.engine())[0]
    assert (change.old, change.new, change.who, change.reason) == ("Good", "Maintenance", "root", "a loose cable")
    lavacli(served, "devices", "update", "loc2", "--health", "GOOD", user="root")
    missing = lavacli(served, "devices", "show", "nope", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_xmlrpc_faults_and_ids_as_numbers_or_text(served):
    rpc = served.rpc()
    job_id = lavacli(served, "jobs", "submit", job_file(served, "ids", ["true"])).stdout.strip()
    assert rpc.scheduler.jobs.show(int(job_id))["id"] == rpc.scheduler.jobs.show(job_id)["id"] == int(job_id)
    assert rpc.scheduler.job_state(int(job_id))["job_id"] == int(job_id)
    for call, code in ((lambda: rpc.scheduler.jobs.show("999999"), 404), (lambda: rpc.scheduler.jobs.show("x"), 404),
                       (lambda: rpc.scheduler.jobs.submit("job_name: [unclosed"), 400),
                       (lambda: served.rpc(None).scheduler.jobs.submit("x"), 401),
                       (lambda: rpc.scheduler.no_such_method(), -32601),
                       (lambda: rpc.scheduler.jobs.show(), -32602)):
        with pytest.raises(xmlrpc.client.Fault) as fault:
            call()
        assert fault.value.faultCode == code, fault.value
    assert "scheduler.jobs.submit" in rpc.system.listMethods()
    problems = rpc.scheduler.jobs.validate("job_name: x\ntimeouts: {job: {minutes: 1}}\nactions: [{boot: {}}]\n")
    assert problems["path"] and "device_type" in problems["msg"]
    assert rpc.scheduler.jobs.validate(local_job("fine")) == {}
    assert [t["name"] for t in rpc.scheduler.device_types.list()] == ["local-shell"]
    assert isinstance(rpc.scheduler.tags.list(), list)


def test_a_multinode_job_gives_its_member_ids(served):
    from test_lab_multinode import multinode_job

    path = served.lab.base / "pair.yaml"
    path.write_text(multinode_job({"left": 1, "right": 1}, {"left": ["lava-sync met", "lava-test-case l --shell true"],
                                                            "right": ["lava-sync met"]}))
    members = lavacli(served, "jobs", "submit", str(path)).stdout.split()
    group = members[0].split(".")[0]
    assert members == [f"{group}.0", f"{group}.1"]
    for member in members:
        lavacli(served, "jobs", "wait", member, "--polling", "1")
        details = show(served, member)
        assert (details["id"], details["state"], details["Health"]) == (member, "Finished", "Complete")
    assert show(served, group)["id"] == f"{group}.0"  # the group's number stands for its first member
    assert "* 0_left.l [pass]" in lavacli(served, "results", f"{group}.0").stdout
    assert served.rpc().scheduler.jobs.definition(f"{group}.1") == path.read_text()
