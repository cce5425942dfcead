"""The dashboard in a real browser: Debian's chromium driven by playwright, against a lab with real workers.

The job list shows a submitted job and links to its page; the page shows a
line the board prints within one second of the board printing it (the job
waits for a file the test creates, then echoes a marker: the clock starts
when the file exists); the device table changes when an admin puts a board
into Maintenance with the dashboard's form, and by itself (no reload) when
`lava-dispatch devices set-health` does. The boards run a health check when
they register: the job list and the job page mark it, the device page links it.

``LAVA_DISPATCH_SCREENSHOTS=docs/img`` also saves a screenshot of each page
there (the ones the README and docs/server.md show).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import run_cli
from lab_helpers import ROOT, local_job, wait_for
from server_lab import lab_server

pytestmark = [pytest.mark.browser, pytest.mark.lab]
CHROMIUM = "/usr/bin/chromium"  # Debian's (deploy/install-deps.sh); playwright downloads no browser here
SCREENSHOTS = os.environ.get("LAVA_DISPATCH_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (deploy/install-deps.sh)"
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        directory = Path(SCREENSHOTS) if Path(SCREENSHOTS).is_absolute() else ROOT / SCREENSHOTS
        directory.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(directory / f"dashboard-{name}.png"), full_page=True)


def submit(served, definition: str) -> str:
    import requests

    answer = requests.post(f"{served.url}/api/v0.2/jobs/", json={"definition": definition},
                           headers=served.headers("alice"), timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job_ids"][0])


def test_job_list_live_log_and_device_table(browser, tmp_path):
    import requests

    from tasks.keys import board_key

    (tmp_path / "local-shell.yaml").write_text(local_job("health-check"))
    with lab_server("dashboard-", boards=("loc1", "loc2"),
                    extra_env={"LAVA_DISPATCH_HEALTH_CHECKS": str(tmp_path)}) as served:
        done = submit(served, local_job("boot-and-measure", [
            "lava-test-case boot-time --result pass --measurement 7.25 --units seconds",
            "lava-test-case network --shell true", "lava-test-case usb --result skip"]))
        wait_for(lambda: served.rpc().scheduler.job_state(done)["job_state"] == "Finished", 90, "the first job")
        served.wait_archived(done)
        flag = served.lab.base / "print-now"
        marker = "MARKER-printed-by-the-board"
        job_id = submit(served, local_job("live-log", ["echo waiting for the test",
                                                       f"while [ ! -e {flag} ]; do sleep 0.02; done",
                                                       f"echo {marker}", "lava-test-case after --shell true"]))
        check = served.lab.r().hget(board_key("loc1"), "hc_last_job")  # loc1's health check ran first
        assert check and served.lab.r().hget(board_key("loc1"), "hc_last_result") == "Complete"
        served.wait_archived(check)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(served.url + "/")
        row = page.locator(f'tr[data-job="{job_id}"]')
        row.wait_for(timeout=10_000)
        assert "live-log" in row.inner_text() and "health check" not in row.inner_text()
        assert "health check" in page.locator(f'tr[data-job="{check}"]').inner_text()
        shot(page, "jobs")
        row.locator(f'a[href="/scheduler/job/{job_id}"]').first.click()
        page.wait_for_url(f"**/scheduler/job/{job_id}", timeout=10_000)
        page.wait_for_function("document.getElementById('log').textContent.includes('waiting for the test')",
                               timeout=30_000)
        flag.touch()
        printed = time.monotonic()
        page.wait_for_function(f"document.getElementById('log').textContent.includes('{marker}')", timeout=1_000)
        seen = time.monotonic() - printed
        print(f"the marker reached the page {seen * 1000:.0f} ms after the board could print it")
        assert seen < 1.0
        page.wait_for_function("document.getElementById('log-status').textContent.includes('complete')",
                               timeout=60_000)
        assert page.locator("#log details").count() > 0  # the actions fold
        assert page.locator("#log .lvl-target").count() > 0  # the board's output, coloured by its level
        page.goto(f"{served.url}/scheduler/job/{done}")
        page.wait_for_function("document.getElementById('log-status').textContent.includes('complete')",
                               timeout=30_000)
        results = page.locator("#results").inner_text()
        assert "boot-time" in results and "7.25" in results and "seconds" in results
        shot(page, "job")

        page.goto(f"{served.url}/scheduler/job/{check}")
        assert "health check of board loc1" in page.locator("#health-check").inner_text()
        page.goto(f"{served.url}/scheduler/device/loc1")
        assert page.locator(f'table.details a[href="/scheduler/job/{check}"]').count() == 1  # the last check
        page.goto(served.url + "/scheduler/alldevices")
        assert "Good" in page.locator('tr[data-device="loc2"] td.health').inner_text()
        assert check in page.locator('tr[data-device="loc1"] td.last-check').inner_text()
        page.goto(served.url + "/login")
        page.fill('input[name="token"]', served.tokens["root"])
        page.click('#login button[type="submit"]')
        page.wait_for_url(served.url + "/", timeout=10_000)
        assert page.locator("#who").inner_text() == "root"
        page.goto(served.url + "/scheduler/device/loc2")
        page.select_option('#health-form select[name="health"]', "Maintenance")
        page.fill('#health-form input[name="reason"]', "new power supply")
        page.click('#health-form button[type="submit"]')
        page.locator("#done").wait_for(timeout=10_000)
        assert "new power supply" in page.locator("#history").inner_text()
        shot(page, "device")
        page.goto(served.url + "/scheduler/alldevices")
        assert page.locator('tr[data-device="loc2"] td.health').inner_text().strip() == "Maintenance"
        assert page.locator('tr[data-device="loc1"] td.health').inner_text().strip() == "Good"
        assert served.rpc().scheduler.devices.show("loc2")["health"] == "Maintenance"
        shot(page, "devices")
        # a change made elsewhere (the CLI) shows in the open table by itself: same document, no reload
        page.evaluate("window.loadedOnce = true")
        assert run_cli("devices", "set-health", "loc1", "maintenance", "--reason", "rewiring").code == 0
        changed = time.monotonic()
        page.wait_for_function("document.querySelector('tr[data-device=\"loc1\"] td.health').textContent.trim()"
                               " === 'Maintenance'", timeout=15_000)
        print(f"the device table showed loc1's Maintenance {time.monotonic() - changed:.1f} s after the CLI set it")
        assert page.evaluate("window.loadedOnce === true")  # the page was not reloaded
        if SCREENSHOTS:  # a device type nobody serves, for the queue page's picture
            from tasks.scheduler import Lab

            Lab().submit(local_job("waits-for-a-board", device_type="qemu"), queue_anyway=True,
                         submitter="alice")
        page.goto(served.url + "/scheduler/queue")
        assert "local-shell" in page.locator("#queue").inner_text()
        shot(page, "queue")
        page.close()
        assert requests.get(served.url + "/v1/healthz", timeout=10).json() == {"health": "good"}
