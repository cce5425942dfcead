"""The archive end to end: finished jobs outlive a Redis flush and server restarts; several servers, one lab.

The first test runs on SQLite and on PostgreSQL (``empty_db_url``: the
server migrates an empty database itself).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import requests
import yaml
from lab_helpers import ROOT, free_port, local_job, wait_for
from server_lab import lab_server, lavacli

pytest_plugins = ("server_fixtures",)
pytestmark = pytest.mark.lab


def submit(served, definition: str) -> str:
    answer = requests.post(f"{served.url}/api/v0.2/jobs/", json={"definition": definition},
                           headers=served.headers(), timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job_ids"][0])


def finished(served, job_id: str) -> dict:
    def done() -> dict | None:
        job = requests.get(f"{served.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()
        return job if job["state"] == "Finished" else None
    return wait_for(done, 60, f"job {job_id} to finish")


def everything(served, job_id: str) -> dict:
    """What the APIs show of a job: its record, log, results (REST and XML-RPC)."""
    base = f"{served.url}/api/v0.2/jobs/{job_id}"
    job = requests.get(f"{base}/", headers=served.headers(), timeout=10).json()
    rpc = served.rpc()
    finished_flag, log = rpc.scheduler.jobs.logs(job_id, 0, None)
    return {"job": {k: v for k, v in job.items()}, "log": requests.get(f"{base}/logs/", timeout=10).text,
            "rpc_log": (finished_flag, log.data), "junit": requests.get(f"{base}/junit/", timeout=10).text,
            "results": yaml.safe_load(rpc.results.get_testjob_results_yaml(job_id)),
            "show": {k: str(v) for k, v in rpc.scheduler.jobs.show(job_id).items()}}


def test_finished_jobs_outlive_a_redis_flush_and_server_restarts(empty_db_url):
    with lab_server("server-flush-", db_url=empty_db_url) as served:
        first = submit(served, local_job("before-the-flush", ["lava-test-case kept --shell true", "echo KEEP-ME"]))
        finished(served, first)
        served.wait_archived(first)
        before = everything(served, first)
        assert "KEEP-ME" in before["log"] and before["rpc_log"][0] is True
        assert [c["name"] for c in before["results"]] == ["kept", "0_lab", "job"]

        served.redis().flushall()
        assert everything(served, first) == before
        wait_for(lambda: "* loc1 (local-shell)" in lavacli(served, "devices", "list").stdout, 60,
                 "the board to register again")
        second = submit(served, local_job("after-the-flush", ["lava-test-case new --shell true"]))
        assert int(second) > int(first), "an archived job's id was given to a new job"
        finished(served, second)
        served.wait_archived(second)

        assert served.stop_server() == 0
        # A job that ends while no server runs is archived when one starts again.
        path = served.lab.base / "offline.yaml"
        path.write_text(local_job("while-the-server-was-down", ["lava-test-case offline --shell true"]))
        done = subprocess.run([sys.executable, "-m", "tasks.cli", "submit", str(path), "--wait"], cwd=ROOT,
                              env=served.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        third = done.stdout.splitlines()[0].strip()
        served.start_server()
        assert everything(served, first) == before
        served.wait_archived(third)
        job = requests.get(f"{served.url}/api/v0.2/jobs/{third}/", timeout=10).json()
        assert job["health"] == "Complete" and "@" in job["submitter"]  # the lab admin's, as `user@host`
        listed = requests.get(f"{served.url}/api/v0.2/jobs/", timeout=10).json()
        assert [j["id"] for j in listed["results"]][:3] == [int(third), int(second), int(first)]
        assert listed["count"] == 3


def test_two_servers_serve_one_lab():
    with lab_server("server-two-") as served:
        other = dataclasses.replace(served, port=free_port(), process=None, starts=100,
                                    env={**served.env, "LAVA_DISPATCH_LAB_DIR": str(served.lab.base / "server2")})
        (served.lab.base / "server2").mkdir()
        other.start_server()
        try:
            job_id = submit(other, local_job("two-servers", ["lava-test-case both --shell true"]))
            finished(served, job_id)
            served.wait_archived(job_id)
            for server in (served, other):
                assert requests.get(f"{server.url}/api/v0.2/jobs/{job_id}/", timeout=10).json()["health"] == \
                    "Complete"
            from server.archive import get_results

            assert [r.name for r in get_results(job_id, engine=served.engine())] == ["both", "0_lab", "job"]
        finally:
            assert other.stop_server() == 0
