"""The shapes LAVA's APIs give a job, its results and its devices, built from this lab's records.

``show`` is ``scheduler.jobs.show`` (every field ``lavacli jobs show``
prints), ``testcase`` is LAVA's result export (``results.*_yaml``, the
notify payload's ``results``), ``rest_job`` and ``rest_testcase`` are the
REST API v0.2 serialisers' fields. Times are datetimes here; each API
encodes them its own way (XML-RPC ``dateTime.iso8601``, JSON ISO 8601).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from pipeline.results import dump_yaml
from server.jobs import JobInfo

# LAVA's numbers for job states and healths (its models), and its legacy "status" (what KernelCI reads).
STATE_NUMBERS = {"Submitted": 0, "Scheduling": 1, "Scheduled": 2, "Running": 3, "Canceling": 4, "Finished": 5}
HEALTH_NUMBERS = {"Unknown": 0, "Complete": 1, "Incomplete": 2, "Canceled": 3}
DEVICE_HEALTHS = {"GOOD": "Good", "UNKNOWN": "Unknown", "LOOPING": "Looping", "BAD": "Bad",
                  "MAINTENANCE": "Maintenance", "RETIRED": "Retired"}
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def shown_id(job_id: str) -> int | str:
    """42 as a number, a multinode member's 42.1 as text (as LAVA's display id)."""
    return int(job_id) if job_id.isdigit() else job_id


def legacy_status(job: JobInfo) -> tuple[int, str]:
    """LAVA's legacy status number and name: 0 Submitted, 1 Running, 2 Complete, 3 Incomplete, 4 Canceled,
    5 Canceling."""
    if job.state in ("Submitted", "Scheduling", "Scheduled"):
        return 0, "Submitted"
    if job.state == "Running":
        return 1, "Running"
    if job.state == "Canceling":
        return 5, "Canceling"
    return {"Complete": (2, "Complete"), "Canceled": (4, "Canceled")}.get(job.health, (3, "Incomplete"))


def show(job: JobInfo) -> dict[str, Any]:
    """``scheduler.jobs.show``: what ``lavacli jobs show`` prints."""
    return {"id": shown_id(job.id), "description": job.description, "device": job.device,
            "device_type": job.device_type, "health_check": job.health_check, "pipeline": True, "health": job.health,
            "state": job.state, "submitter": job.submitter, "submit_time": job.submit_time,
            "start_time": job.start_time, "end_time": job.end_time, "tags": list(job.tags),
            "visibility": job.visibility.capitalize(), "failure_comment": job.failure_comment,
            "error_msg": job.error_msg, "error_type": job.error_type, "multinode_group": job.multinode_group}


def listed(job: JobInfo) -> dict[str, Any]:
    """One job of ``scheduler.jobs.list`` (what ``lavacli jobs list`` prints)."""
    data = show(job)
    data["actual_device"] = data.pop("device")
    return data


def details(job: JobInfo) -> dict[str, Any]:
    """``scheduler.job_details``: LAVA's older, wider view of a job."""
    status = legacy_status(job)[1]
    return {**show(job), "status": status, "submitter_username": job.submitter, "submitter_email": "",
            "actual_device_id": job.device, "requested_device_type_id": job.device_type,
            "priority": job.priority, "is_public": job.visibility == "public", "definition": job.definition,
            "original_definition": job.definition, "multinode_definition": job.definition if job.multinode_group
            else "", "sub_id": job.id if "." in job.id else "", "target_group": job.multinode_group,
            "absolute_url": f"/scheduler/job/{job.id}", "is_pipeline": True}


def testcases(job_id: str, results: list[dict[str, Any]], logged: datetime | None) -> list[dict[str, Any]]:
    """LAVA's export of every test case (its ``results.get_testjob_results_yaml`` items), numbered from 1."""
    out = []
    for number, item in enumerate(results, 1):
        measurement = item.get("measurement")
        metadata = {k: v for k, v in item.items() if k not in ("suite", "logged")}
        metadata.setdefault("definition", item.get("definition", item["suite"]))
        when = item.get("logged") or logged
        out.append({"name": str(item["case"]), "job": job_id, "suite": str(item["suite"]),
                    "result": str(item["result"]), "measurement": "None" if measurement is None else str(measurement),
                    "unit": str(item.get("units") or ""), "level": str(item.get("level") or ""),
                    "url": f"/results/{job_id}/{item['suite']}/{item['case']}", "id": str(number),
                    "logged": "None" if when is None else str(when), "log_start_line": "", "log_end_line": "",
                    "metadata": metadata})
    return out


def results_yaml(cases: list[dict[str, Any]]) -> str:
    return yaml.dump(cases, Dumper=SAFE_DUMPER, default_flow_style=False, sort_keys=False, allow_unicode=True) \
        if cases else "[]\n"


def suites_yaml(cases: list[dict[str, Any]]) -> dict[str, str]:
    """``{suite: YAML of its test cases}``: the notify payload's ``results`` (the lava suite included)."""
    suites: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        suites.setdefault(case["suite"], []).append(case)
    return {name: results_yaml(items) for name, items in suites.items()}


def tap13(results: list[dict[str, Any]]) -> str:
    """The results as TAP version 13, one test point per case (suite and case in its description)."""
    lines = ["TAP version 13", f"1..{len(results)}"]
    for number, item in enumerate(results, 1):
        name = f"{item['suite']} {item['case']}".replace("#", "\\#").replace("\n", " ")
        result = item["result"]
        if result == "pass":
            lines.append(f"ok {number} - {name}")
        elif result == "skip":
            lines.append(f"ok {number} - {name} # SKIP test skipped")
        elif result == "unknown":
            lines.append(f"not ok {number} - {name} # TODO unknown result")
        else:
            lines.append(f"not ok {number} - {name}")
            if item.get("error_msg"):
                lines += ["  ---", "  " + dump_yaml({"message": str(item["error_msg"])}).strip(), "  ..."]
    return "\n".join(lines) + "\n"


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def rest_job(job: JobInfo, definition: bool = True) -> dict[str, Any]:
    """The REST API's job (LAVA's TestJobSerializer fields)."""
    data: dict[str, Any] = {
        "id": shown_id(job.id), "submitter": job.submitter, "viewing_groups": [], "description": job.description,
        "health_check": job.health_check, "requested_device_type": job.device_type, "tags": list(job.tags),
        "actual_device": job.device, "submit_time": iso(job.submit_time), "start_time": iso(job.start_time),
        "end_time": iso(job.end_time), "state": job.state, "health": job.health, "priority": job.priority,
        "visibility": job.visibility, "failure_tags": [], "failure_comment": job.failure_comment,
        "error_type": job.error_type, "error_msg": job.error_msg, "multinode_group": job.multinode_group}
    if definition:
        data.update(definition=job.definition, original_definition=job.definition,
                    multinode_definition=job.definition if job.multinode_group else "")
    return data


def rest_testcase(job_id: str, case: dict[str, Any]) -> dict[str, Any]:
    """The REST API's test case (LAVA's TestCaseSerializer fields; ``suite`` is the suite's name)."""
    measurement = case["measurement"]
    return {"id": int(case["id"]), "result": case["result"], "name": case["name"], "unit": case["unit"],
            "measurement": None if measurement == "None" else measurement, "metadata": case["metadata"],
            "suite": case["suite"], "job": job_id, "start_log_line": None, "end_log_line": None,
            "test_set": case["metadata"].get("set"), "logged": None if case["logged"] == "None" else case["logged"]}


def device_health(value: Any) -> str:
    """A health given as LAVA's clients give it (``MAINTENANCE``, or its display name)."""
    text = str(value or "").upper()
    if text not in DEVICE_HEALTHS:
        raise ValueError(f"Health '{value}' is invalid")
    return DEVICE_HEALTHS[text]


__all__ = ["show", "listed", "details", "testcases", "results_yaml", "suites_yaml", "tap13", "rest_job",
           "rest_testcase", "legacy_status", "shown_id", "device_health", "STATE_NUMBERS", "HEALTH_NUMBERS"]
