"""The REST API v0.2 through real HTTP (requests) against ``lava-dispatch server`` and real board workers."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest
import requests
import yaml
from lab_helpers import local_job, wait_for
from server_lab import lab_server

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def served():
    with lab_server("server-rest-", boards=("loc1",)) as lab:
        yield lab


def api(served, path: str) -> str:
    return f"{served.url}/api/v0.2/{path}"


def submit(served, definition: str, user: str = "alice") -> str:
    answer = requests.post(api(served, "jobs/"), json={"definition": definition}, headers=served.headers(user),
                           timeout=30)
    assert answer.status_code == 201, answer.text
    (job_id,) = answer.json()["job_ids"]
    return str(job_id)


def finished(served, job_id: str, timeout: float = 60) -> dict:
    def done() -> dict | None:
        job = requests.get(api(served, f"jobs/{job_id}/"), headers=served.headers(), timeout=10).json()
        return job if job["state"] == "Finished" else None
    return wait_for(done, timeout, f"job {job_id} to finish")


def test_submit_poll_and_fetch_results(served):
    job_id = submit(served, local_job("rest-job", ["lava-test-case good --shell true",
                                                   "lava-test-case bad --shell false",
                                                   "lava-test-case skipped --result skip"]))
    job = finished(served, job_id)
    assert (job["health"], job["submitter"], job["requested_device_type"], job["actual_device"]) == (
        "Complete", "alice", "local-shell", "loc1")
    assert job["definition"].startswith("device_type: local-shell") and job["id"] == int(job_id)
    junit = requests.get(api(served, f"jobs/{job_id}/junit/"), headers=served.headers(), timeout=10)
    assert junit.status_code == 200 and junit.headers["content-type"].startswith("application/xml")
    suites = {s.get("name"): s for s in ElementTree.fromstring(junit.content).iter("testsuite")}
    assert set(suites) == {"0_lab", "lava"}
    cases = {c.get("name"): c for c in suites["0_lab"].iter("testcase")}
    assert cases["bad"].find("failure") is not None and cases["skipped"].find("skipped") is not None
    assert suites["0_lab"].get("tests") == "3" and suites["0_lab"].get("failures") == "1"
    tap = requests.get(api(served, f"jobs/{job_id}/tap13/"), timeout=10).text.splitlines()
    assert tap[:2] == ["TAP version 13", "1..5"] and "ok 1 - 0_lab good" in tap and "not ok 2 - 0_lab bad" in tap
    assert "ok 3 - 0_lab skipped # SKIP test skipped" in tap
    suites_page = requests.get(api(served, f"jobs/{job_id}/suites/"), timeout=10).json()
    assert [s["name"] for s in suites_page["results"]] == ["0_lab", "lava"]
    tests = requests.get(api(served, f"jobs/{job_id}/tests/"), params={"limit": 2}, timeout=10).json()
    assert tests["count"] == 5 and len(tests["results"]) == 2 and tests["next"] and tests["previous"] is None
    assert tests["results"][0]["name"] == "good" and tests["results"][0]["result"] == "pass"
    everything = requests.get(api(served, f"jobs/{job_id}/logs/"), timeout=10)
    records = yaml.safe_load(everything.text)
    assert records and all(set(r) >= {"dt", "lvl", "msg"} for r in records)
    tail = yaml.safe_load(requests.get(api(served, f"jobs/{job_id}/logs/"), params={"start": len(records) - 3},
                                       timeout=10).text)
    assert tail == records[-3:]
    page = yaml.safe_load(requests.get(api(served, f"jobs/{job_id}/logs/"), params={"start": 2, "end": 5},
                                       timeout=10).text)
    assert page == records[2:5]
    served.wait_archived(job_id)
    assert yaml.safe_load(requests.get(api(served, f"jobs/{job_id}/logs/"), timeout=10).text) == records


def test_tokens_and_permissions(served):
    definition = local_job("guarded", ["lava-test-case nap --shell sleep 60"])
    assert requests.post(api(served, "jobs/"), json={"definition": definition}, timeout=10).status_code == 401
    wrong = {"Authorization": "Token not-a-real-token"}
    for path in ("jobs/", "devices/", "system/version/"):
        answer = requests.get(api(served, path), headers=wrong, timeout=10)
        assert answer.status_code == 401 and answer.json()["detail"] == "Invalid token.", path
    assert requests.post(api(served, "jobs/"), json={"definition": definition}, headers=wrong,
                         timeout=10).status_code == 401
    job_id = submit(served, definition)
    wait_for(lambda: requests.get(api(served, f"jobs/{job_id}/"), timeout=10).json()["state"] == "Running", 60,
             "the job to run")
    other = requests.post(api(served, f"jobs/{job_id}/cancel/"), headers=served.headers("bob"), timeout=10)
    assert other.status_code == 403 and "own jobs" in other.json()["detail"]
    anonymous = requests.post(api(served, f"jobs/{job_id}/cancel/"), timeout=10)
    assert anonymous.status_code == 401
    assert requests.post(api(served, f"jobs/{job_id}/resubmit/"), headers=served.headers("bob"),
                         timeout=10).status_code == 403
    admin = requests.post(api(served, f"jobs/{job_id}/cancel/"), headers=served.headers("root"), timeout=10)
    assert admin.status_code == 200 and admin.json() == {"message": "Job cancel signal sent."}
    assert finished(served, job_id)["health"] == "Canceled"
    again = requests.post(api(served, f"jobs/{job_id}/resubmit/"), headers=served.headers(), timeout=10)
    assert again.status_code == 201
    (new_id,) = again.json()["job_ids"]
    assert new_id > int(job_id)
    requests.post(api(served, f"jobs/{new_id}/cancel/"), headers=served.headers(), timeout=10).raise_for_status()
    assert finished(served, str(new_id))["health"] == "Canceled"


def test_malformed_definitions_get_the_validators_lines(served):
    cases = {
        "job_name: [unclosed\n": "job YAML line 2, column 1",
        "job_name: x\ntimeouts: {job: {minutes: 1}}\nactions: [{boot: {method: ubot}}]\n": "device_type: required",
        local_job("bad-boot").replace("method: minimal", "method: ubot"): "'ubot' is not one of",
        local_job("mail").replace("actions:", "notify:\n  criteria: {status: finished}\n  recipients:\n"
                                  "  - to: {method: email, email: a@example.com}\nactions:", 1): "email and IRC",
        "": "definition: required but missing",
    }
    for definition, expected in cases.items():
        answer = requests.post(api(served, "jobs/"), json={"definition": definition}, headers=served.headers(),
                               timeout=10)
        assert answer.status_code == 400, (definition, answer.text)
        body = answer.json()
        assert any(expected in problem for problem in body["problems"]), body
        assert all(problem in body["message"] for problem in body["problems"])
    form = requests.post(api(served, "jobs/"), data={"definition": "job_name: [unclosed\n"},
                         headers=served.headers(), timeout=10)
    assert form.status_code == 400 and "job YAML line 2" in form.json()["message"]
    check = requests.post(api(served, "jobs/validate/"), json={"definition": local_job("fine")},
                          headers=served.headers(), timeout=10).json()
    assert check == {"message": "Job valid."}


def test_personal_jobs_hide_their_log_and_results(served):
    job_id = submit(served, local_job("secret-job", ["lava-test-case hidden --shell true"]).replace(
        "actions:", "visibility: personal\nactions:", 1))
    job = finished(served, job_id)
    assert job["visibility"] == "personal"
    for who in ({}, served.headers("bob")):
        for path in ("logs/", "junit/", "tests/"):
            assert requests.get(api(served, f"jobs/{job_id}/{path}"), headers=who, timeout=10).status_code == 403
        seen = requests.get(api(served, f"jobs/{job_id}/"), headers=who, timeout=10).json()
        assert seen["state"] == "Finished" and "definition" not in seen
    for who in ("alice", "root"):
        assert requests.get(api(served, f"jobs/{job_id}/logs/"), headers=served.headers(who), timeout=10).ok
        assert requests.get(api(served, f"jobs/{job_id}/"), headers=served.headers(who), timeout=10).json()[
            "definition"]


def test_listing_devices_and_the_openapi_document(served):
    job_id = submit(served, local_job("listed"))
    finished(served, job_id)
    page = requests.get(api(served, "jobs/"), params={"limit": 1}, timeout=10).json()
    assert page["count"] >= 1 and len(page["results"]) == 1 and page["previous"] is None
    assert page["results"][0]["id"] == max(j["id"] for j in requests.get(api(served, "jobs/"), timeout=10)
                                           .json()["results"])
    second = requests.get(page["next"], timeout=10).json() if page["next"] else {"results": [], "previous": None}
    assert all(j["id"] < page["results"][0]["id"] for j in second["results"])
    filtered = requests.get(api(served, "jobs/"), params={"health": "complete", "submitter": "alice"},
                            timeout=10).json()
    assert filtered["results"] and all(j["health"] == "Complete" for j in filtered["results"])
    assert requests.get(api(served, "jobs/"), params={"state": "nonsense"}, timeout=10).status_code == 400
    assert requests.get(api(served, f"jobs/0{job_id}/"), timeout=10).json()["id"] == int(job_id)
    assert requests.get(api(served, "jobs/12345678/"), timeout=10).status_code == 404
    devices = requests.get(api(served, "devices/"), timeout=10).json()
    assert [d["hostname"] for d in devices["results"]] == ["loc1"] and devices["results"][0]["health"] == "Good"
    refused = requests.put(api(served, "devices/loc1/"), json={"health": "Maintenance"}, headers=served.headers(),
                           timeout=10)
    assert refused.status_code == 403
    changed = requests.put(api(served, "devices/loc1/"), json={"health": "maintenance", "reason": "by rest"},
                           headers=served.headers("root"), timeout=10)
    assert changed.ok and changed.json()["health"] == "Maintenance", changed.text
    from tasks.scheduler import Lab

    newest = Lab(served.redis()).health_history("loc1")[0]
    assert (newest["new"], newest["who"], newest["reason"]) == ("Maintenance", "root", "by rest")
    back = requests.patch(api(served, "devices/loc1/"), json={"health": "Good"}, headers=served.headers("root"),
                          timeout=10)
    assert back.json()["health"] == "Good"
    assert requests.get(api(served, "devicetypes/"), timeout=10).json()["results"][0]["name"] == "local-shell"
    assert requests.get(api(served, "tags/"), timeout=10).json()["count"] == 0
    assert requests.get(api(served, "system/version/"), timeout=10).json() == {"version": "2025.12"}
    document = requests.get(api(served, "openapi.json"), timeout=10).json()
    assert {"/api/v0.2/jobs/", "/api/v0.2/jobs/{job_id}/junit/", "/api/v0.2/devices/"} <= set(document["paths"])
    assert "/RPC2" not in document["paths"]
    index = requests.get(served.url + "/", timeout=10)
    assert index.ok and "lava-dispatch" in index.text and "listed" in index.text
    metrics = requests.get(served.url + "/metrics", timeout=10).text
    assert 'lava_dispatch_boards{state="idle"}' in metrics
