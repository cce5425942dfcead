"""``/metrics``, ``/v1/healthz`` and the dashboard's pages over real HTTP, against real board workers.

``/metrics`` is parsed with prometheus-client's own parser and compared
with what the lab's Redis holds at the same moment: boards by health and
state, the queue per device type, running jobs; then, once the jobs have
ended and been archived, their counts and histograms (each job counted
once, however often it is archived).
"""

from __future__ import annotations

import re

import pytest
import requests
from lab_helpers import local_job, wait_for
from prometheus_client.parser import text_string_to_metric_families
from server_lab import lab_server

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def served():
    with lab_server("server-metrics-", boards=("loc1", "loc2")) as lab:
        yield lab


def scrape(served) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape."""
    answer = requests.get(served.url + "/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def submit(served, definition: str, user: str = "alice") -> str:
    answer = requests.post(f"{served.url}/api/v0.2/jobs/", json={"definition": definition},
                           headers=served.headers(user), timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job_ids"][0])


def waiting_job(name: str, flag, cases: list[str] | None = None) -> str:
    """A job that waits on its board until the test creates ``flag``."""
    return local_job(name, [f"while [ ! -e {flag} ]; do sleep 0.05; done", *(cases or ["lava-test-case ok --shell true"])])


def state(served, job_id: str) -> str:
    return requests.get(f"{served.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()["state"]


def test_metrics_match_the_lab_and_count_each_ended_job_once(served):
    from server import archiver
    from tasks.keys import LAB, job_key

    r = served.redis()
    flag = served.lab.base / "metrics-go"
    first = submit(served, waiting_job("hold-1", flag))
    second = submit(served, waiting_job("hold-2", flag, ["lava-test-case m --result pass --measurement 2.5 --units s",
                                                          "lava-test-case bad --shell false"]))
    wait_for(lambda: state(served, first) == state(served, second) == "Running", 60, "both boards running")
    queued = submit(served, waiting_job("queued", flag))
    assert state(served, queued) == "Submitted"
    served.rpc("root").scheduler.devices.update("loc2", None, None, None, True, "MAINTENANCE", None, None, "metrics test")

    samples = scrape(served)
    lab_queue = r.zcard(LAB.pending)
    running = [job for job in r.zrange(LAB.leases, 0, -1) if r.hget(job_key(job), "state") == "Running"]
    assert (lab_queue, len(running)) == (1, 2)
    assert value(samples, "lava_dispatch_queue_length", device_type="local-shell") == lab_queue
    assert value(samples, "lava_dispatch_queued_jobs") == lab_queue
    assert value(samples, "lava_dispatch_queue_oldest_seconds", device_type="local-shell") > 0
    assert value(samples, "lava_dispatch_jobs_running", device_type="local-shell") == len(running)
    devices = {labels: v for labels, v in samples["lava_dispatch_devices"].items() if v}
    assert devices == {(("device_type", "local-shell"), ("health", "Good"), ("state", "Running")): 1.0,
                       (("device_type", "local-shell"), ("health", "Maintenance"), ("state", "Running")): 1.0}
    assert sum(samples["lava_dispatch_devices"].values()) == r.scard(LAB.boards) == 2
    assert value(samples, "lava_dispatch_devices_offline", device_type="local-shell") == 0
    assert value(samples, "lava_dispatch_boards", state="busy") == 2

    flag.touch()
    for job_id in (first, second, queued):
        wait_for(lambda: state(served, job_id) == "Finished", 90, f"job {job_id} to end")
        served.wait_archived(job_id)
    assert archiver.archive(r, second, served.engine()) == "archived"  # archived again: not counted again
    samples = scrape(served)
    assert value(samples, "lava_dispatch_jobs_finished_total", device_type="local-shell", health="Complete") == 3
    assert value(samples, "lava_dispatch_job_duration_seconds_count", device_type="local-shell") == 3
    assert value(samples, "lava_dispatch_job_duration_seconds_bucket", device_type="local-shell", le="+Inf") == 3
    assert value(samples, "lava_dispatch_job_duration_seconds_sum", device_type="local-shell") > 0
    waits = value(samples, "lava_dispatch_job_wait_seconds_sum", device_type="local-shell")
    assert value(samples, "lava_dispatch_job_wait_seconds_count", device_type="local-shell") == 3 and waits > 0
    assert value(samples, "lava_dispatch_test_cases_total", device_type="local-shell", result="pass") == 3
    assert value(samples, "lava_dispatch_test_cases_total", device_type="local-shell", result="fail") == 1
    assert value(samples, "lava_dispatch_queue_length", device_type="local-shell") == 0
    assert value(samples, "lava_dispatch_jobs_running", device_type="local-shell") == 0
    latency = samples["lava_dispatch_http_request_duration_seconds_count"]
    assert latency[(("method", "POST"), ("route", "/api/v0.2/jobs/"), ("status", "2xx"))] == 3
    served.rpc("root").scheduler.devices.update("loc2", None, None, None, True, "GOOD", None, None, "back")


def test_healthz_is_lavas(served):
    for path in ("/v1/healthz", "/v1/healthz/"):
        answer = requests.get(served.url + path, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"health": "good"})


def test_pages_are_public_and_personal_jobs_keep_their_log(served):
    public = submit(served, local_job("public-page", ["lava-test-case speed --result pass --measurement 42.5 "
                                                      "--units MB/s"]))
    personal = submit(served, "visibility: personal\n" + local_job("personal-page"))
    for job_id in (public, personal):
        wait_for(lambda: state(served, job_id) == "Finished", 90, f"job {job_id} to end")
    listing = requests.get(served.url + "/", timeout=10)
    assert listing.status_code == 200
    assert f'href="/scheduler/job/{public}"' in listing.text and f'href="/scheduler/job/{personal}"' in listing.text
    page = requests.get(f"{served.url}/scheduler/job/{public}", timeout=10).text
    assert "speed" in page and "42.5" in page and "MB/s" in page and "device_type: local-shell" in page
    log = requests.get(f"{served.url}/scheduler/job/{public}/log", timeout=30).text
    assert "event: lines" in log and "event: end" in log and "start: 1 minimal-boot" in log
    hidden = requests.get(f"{served.url}/scheduler/job/{personal}", timeout=10).text
    assert "This job is personal" in hidden and "device_type: local-shell" not in hidden
    assert requests.get(f"{served.url}/scheduler/job/{personal}/log", timeout=10).status_code == 403
    own = requests.get(f"{served.url}/scheduler/job/{personal}", cookies={"lava_dispatch_token": served.tokens["alice"]},
                       timeout=10).text
    assert "This job is personal" not in own and "device_type: local-shell" in own
    filtered = requests.get(served.url + "/", params={"submitter": "nobody"}, timeout=10).text
    assert "No job matches." in filtered
    assert requests.get(served.url + "/", params={"state": "Bogus"}, timeout=10).status_code == 400
    devices = requests.get(served.url + "/scheduler/alldevices", timeout=10).text
    assert re.search(r'data-device="loc1".*?Good.*?Idle', devices, re.S)
    rows = requests.get(served.url + "/scheduler/alldevices/rows", timeout=10)  # what the table refreshes from
    assert rows.headers["cache-control"] == "no-store" and "<html" not in rows.text
    assert re.search(r'<tr data-device="loc1">.*?Good.*?Idle', rows.text, re.S)
    assert requests.get(served.url + "/scheduler/device/nope", timeout=10).status_code == 404


def test_the_health_form_needs_an_admin_and_its_form_token(served):
    url = f"{served.url}/scheduler/device/loc1/health"
    form = {"health": "Maintenance", "reason": "forged"}
    assert requests.post(url, data=form, timeout=10).status_code == 403  # no cookie, no form token
    admin = requests.Session()
    login = admin.post(served.url + "/login", data={"token": served.tokens["root"]}, timeout=10,
                       allow_redirects=False)
    assert login.status_code == 303 and "samesite=strict" in login.headers["set-cookie"].lower()
    assert "httponly" in login.headers["set-cookie"].lower()
    assert admin.post(url, data=form, timeout=10).status_code == 403  # the cookie alone is not enough
    page = admin.get(f"{served.url}/scheduler/device/loc1", timeout=10).text
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', page).group(1)
    foreign = admin.post(url, data={**form, "form_token": token}, headers={"Origin": "http://evil.example"},
                         timeout=10)
    assert foreign.status_code == 403
    user = requests.Session()
    user.post(served.url + "/login", data={"token": served.tokens["alice"]}, timeout=10)
    user_token = re.search(r'name="form_token" value="([0-9a-f]+)"',
                           user.get(f"{served.url}/scheduler/device/loc1", timeout=10).text).group(1)
    assert user.post(url, data={**form, "form_token": user_token}, timeout=10).status_code == 403  # not an admin
    assert served.rpc().scheduler.devices.show("loc1")["health"] == "Good"
    done = admin.post(url, data={"health": "Maintenance", "reason": "new cable", "form_token": token}, timeout=10)
    assert done.status_code == 200 and "Health changed." in done.text and "new cable" in done.text
    assert served.rpc().scheduler.devices.show("loc1")["health"] == "Maintenance"
    admin.post(url, data={"health": "Good", "reason": "cable replaced", "form_token": token}, timeout=10)
    assert served.rpc().scheduler.devices.show("loc1")["health"] == "Good"
    wrong = admin.post(served.url + "/login", data={"token": "not-a-token"}, timeout=10)
    assert wrong.status_code == 401 and "no such token" in wrong.text


def test_a_log_stream_follows_a_running_job_and_ends_when_the_server_stops():
    with lab_server("server-sse-", boards=("loc1",)) as served:
        flag = served.lab.base / "never"
        job_id = submit(served, local_job("endless", ["echo first line", f"while [ ! -e {flag} ]; do sleep 0.05; done"]))
        stream = requests.get(f"{served.url}/scheduler/job/{job_id}/log", stream=True, timeout=30)
        assert stream.headers["content-type"].startswith("text/event-stream")
        seen = b""
        for chunk in stream.iter_content(chunk_size=None):
            seen += chunk
            if b"first line" in seen:
                break
        ids = re.findall(rb"^id: (\d+-\d+)$", seen, re.M)
        assert ids and b"event: lines" in seen
        again = requests.get(f"{served.url}/scheduler/job/{job_id}/log", headers={"Last-Event-ID": ids[-1].decode()},
                             stream=True, timeout=30)
        resumed = b""
        for chunk in again.iter_content(chunk_size=None):
            resumed += chunk
            if b": waiting" in resumed:
                break
        assert b"first line" not in resumed  # resumed after the last entry it had, then waits for more
        assert served.stop_server() == 0  # open streams end: uvicorn's graceful stop does not wait on them
        assert b"event: end" not in b"".join(stream.iter_content(chunk_size=None))
        stream.close()
        again.close()
        flag.touch()
