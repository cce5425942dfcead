"""Notify callbacks end to end: a KernelCI-style job, a real HTTP receiver, the server's archive worker.

The receiver reads the payload the way KernelCI's LAVA callback handler does
(kernelci-core ``kernelci.runtime.lava.Callback``, kernelci-pipeline
``lava_callback.py``): the raw token in ``Authorization``, ``status`` (LAVA's
legacy number), ``results`` as ``{suite: YAML}`` with the ``lava`` suite's
``job`` entry and its metadata, each test's ``name``, ``result`` and
``metadata``, the ``definition``'s ``metadata``, ``actual_device_id`` and the
``log`` as output.yaml text.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest
import requests
import yaml
from lab_helpers import ROOT, free_port, local_job, wait_for
from server_lab import lab_server

from tasks.keys import notified_key

pytestmark = pytest.mark.lab
SECRET = "kci-callback-secret-0123456789"


class Receiver:
    """An HTTP server recording every request; ``statuses`` are answered in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 202
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"].split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served():
    env = {"LAVA_DISPATCH_NOTIFY_RETRY_SECONDS": "0.2", "LAVA_DISPATCH_NOTIFY_RETRIES": "2",
           "LAVA_DISPATCH_NOTIFY_TIMEOUT": "5", "LAVA_DISPATCH_NOTIFY_ALLOW": "127.0.0.1,localhost"}
    with lab_server("server-notify-", extra_env=env) as lab:
        # The lab admin stores alice's KernelCI callback token, as the CLI does it (the secret on stdin).
        added = subprocess.run([sys.executable, "-m", "tasks.cli", "tokens", "add-remote", "alice",
                                "kernelci-callback"], input=SECRET + "\n", capture_output=True, text=True, cwd=ROOT,
                               env=lab.env, timeout=60)
        assert added.returncode == 0, added.stderr
        yield lab


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def kernelci_job(name: str, url: str, steps: list[str], status: str = "finished", **callback) -> str:
    job = yaml.safe_load(local_job(name, steps))
    job["metadata"] = {"node_id": "65a1b2c3", "api_config_name": "staging", "storage_config_name": "staging"}
    job["notify"] = {"criteria": {"status": status},
                     "callback": {"url": url, "method": "POST", "dataset": "all", "content-type": "json",
                                  "token": "kernelci-callback", **callback}}
    return yaml.safe_dump(job, sort_keys=False)


def submit(served, definition: str) -> str:
    answer = requests.post(f"{served.url}/api/v0.2/jobs/", json={"definition": definition},
                           headers=served.headers(), timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job_ids"][0])


def kernelci_reads(data: dict) -> dict:
    """What KernelCI's callback handler takes from the payload (its field accesses, in short)."""
    names = {2: "pass", 3: "incomplete", 4: "incomplete", 5: "incomplete"}
    results = {}
    for suite, text in data["results"].items():
        tests = yaml.safe_load(text)
        if suite == "lava":
            stages = {stage["name"]: stage for stage in tests}
            results["lava"] = {"job": stages["job"]["result"],
                               "infra": stages["job"]["metadata"].get("error_type") == "Infrastructure"}
        else:
            results[suite.partition("_")[2]] = {t["name"]: t["result"] for t in tests if not t["metadata"].get("set")}
    log = yaml.load(data["log"], Loader=yaml.CSafeLoader)
    return {"result": names.get(data["status"]), "results": results, "device": data.get("actual_device_id"),
            "meta": yaml.safe_load(data["definition"])["metadata"],
            "target": [line["msg"] for line in log if line["lvl"] == "target" and isinstance(line["msg"], str)]}


def test_a_kernelci_callback_gets_the_token_and_a_payload_kernelci_reads(served, receiver):
    job_id = submit(served, kernelci_job("kci-baseline", f"{receiver.url}/node/65a1b2c3",
                                         ["lava-test-case dmesg-crit --shell true", "echo ON-THE-BOARD",
                                          "lava-test-case dmesg-alert --shell false"]))
    wait_for(lambda: receiver.to("/node/65a1b2c3"), 60, "the callback")
    (request,) = receiver.to("/node/65a1b2c3")
    assert request["method"] == "POST" and request["headers"]["Authorization"] == SECRET
    assert request["headers"]["Content-Type"] == "application/json"
    data = json.loads(request["body"])
    assert data["id"] == int(job_id) and (data["status"], data["status_string"]) == (2, "complete")
    assert (data["state_string"], data["health_string"], data["state"], data["health"]) == ("Finished", "Complete",
                                                                                            5, 1)
    assert data["submitter_username"] == "alice" and data["description"] == "kci-baseline"
    assert data["metadata"]["node_id"] == "65a1b2c3" and data["end_time"] != "None"
    read = kernelci_reads(data)
    assert read["result"] == "pass" and read["device"] == "loc1"
    assert read["meta"] == {"node_id": "65a1b2c3", "api_config_name": "staging", "storage_config_name": "staging"}
    assert read["results"]["lab"] == {"dmesg-crit": "pass", "dmesg-alert": "fail"}
    assert read["results"]["lava"] == {"job": "pass", "infra": False}
    assert any("ON-THE-BOARD" in line for line in read["target"])
    job_case = next(c for c in yaml.safe_load(data["results"]["lava"]) if c["name"] == "job")
    assert job_case["metadata"]["result"] == "pass" and job_case["suite"] == "lava"
    assert requests.get(f"{served.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()["health"] == "Complete"


def test_an_incomplete_job_reports_its_error_to_kernelci(served, receiver):
    job_id = submit(served, kernelci_job("kci-broken", f"{receiver.url}/node/broken",
                                         ["lava-test-raise the-board-caught-fire"]))
    wait_for(lambda: receiver.to("/node/broken"), 60, "the callback")
    data = json.loads(receiver.to("/node/broken")[0]["body"])
    assert (data["status"], data["health_string"]) == (3, "Incomplete")
    read = kernelci_reads(data)
    assert read["result"] == "incomplete" and read["results"]["lava"]["job"] == "fail"
    job_case = next(c for c in yaml.safe_load(data["results"]["lava"]) if c["name"] == "job")
    assert job_case["metadata"]["error_type"] and job_case["metadata"]["error_msg"]
    assert requests.get(f"{served.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()["health"] == "Incomplete"


def test_a_failing_callback_is_tried_again_and_never_changes_the_job(served, receiver):
    receiver.statuses = [500, 503]
    job_id = submit(served, kernelci_job("kci-flaky", f"{receiver.url}/status/{{ID}}/{{STATUS}}",
                                         ["lava-test-case ok --shell true"], method="GET"))
    path = f"/status/{job_id}/2"
    wait_for(lambda: len(receiver.to(path)) == 3, 60, "the callback to be tried three times")
    assert all(r["method"] == "GET" and r["headers"]["Authorization"] == SECRET for r in receiver.to(path))
    unreachable = f"http://127.0.0.1:{free_port()}/nobody"
    job_id = submit(served, kernelci_job("kci-nobody", unreachable, ["true"]))
    wait_for(lambda: f"job {job_id}: callback {unreachable}" in served.log.read_text() and "given up after 3 tries"
             in served.log.read_text(), 60, "the callback to be given up")
    assert requests.get(f"{served.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()["health"] == "Complete"


def test_criteria_decide_and_the_submit_refuses_what_cannot_be_sent(served, receiver):
    job_id = submit(served, kernelci_job("kci-only-failures", f"{receiver.url}/failures", ["true"],
                                         status="incomplete"))
    wait_for(lambda: f"job {job_id} archived" in served.log.read_text(), 60, "the job to be archived")
    assert not served.redis().exists(notified_key(job_id, 0)) and not receiver.to("/failures")
    refusals = {
        kernelci_job("x", f"{receiver.url}/x", ["true"], token="no-such-token"):
            "notify.callback.token: user alice has no remote token named 'no-such-token'",
        kernelci_job("x", "http://ci.example.com/x", ["true"]):
            "notify.callback.url: the host of 'http://ci.example.com/x' is not one LAVA_DISPATCH_NOTIFY_ALLOW allows",
        kernelci_job("x", f"{receiver.url}/x", ["true"], status="running"):
            "notify.criteria.status: status 'running': this lab notifies when a job ends",
    }
    for definition, expected in refusals.items():
        answer = requests.post(f"{served.url}/api/v0.2/jobs/", json={"definition": definition},
                               headers=served.headers(), timeout=30)
        assert answer.status_code == 400 and any(p.startswith(expected) for p in answer.json()["problems"]), \
            answer.text
