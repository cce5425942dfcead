"""Results as files: LAVA-style results.yaml, JUnit results.xml, and a terminal summary.

Names and messages come from the board and the job: each file stays
well-formed whatever characters they hold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from pipeline.log import printable

SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SURROGATE = re.compile("[\ud800-\udfff]")
# Characters XML 1.0 cannot hold (C0 controls but tab and newlines, surrogates, U+FFFE, U+FFFF),
# and DEL and C1 controls, which it can but which no reader shows: written as \xNN / \uNNNN.
# (Listed, not as the complement of what is safe: a class of ranges up to U+10FFFF takes ~10 ms to compile.)
XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def dump_yaml(data: Any) -> str:
    """Block-style YAML, with the C emitter when PyYAML has it (results files can be large)."""
    try:
        text: str = yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except UnicodeEncodeError:  # a lone surrogate (a job's "\ud800"): no YAML reader takes it back, even escaped
        text = yaml.dump(_without_surrogates(data), Dumper=SAFE_DUMPER, sort_keys=False, default_flow_style=False,
                         allow_unicode=True)
    return text


def _without_surrogates(data: Any) -> Any:
    if isinstance(data, str):
        return SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {_without_surrogates(key): _without_surrogates(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_without_surrogates(item) for item in data]
    return data


def xml_safe(value: Any) -> str:
    """``value`` as text an XML 1.0 document can hold."""
    return XML_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], str(value))


def write_results_yaml(results: Iterable[dict[str, Any]], path: Path) -> None:
    path.write_text(dump_yaml(list(results)))


def junit_xml(results: list[dict[str, Any]], job_name: str) -> str:
    """JUnit XML, one testsuite per suite, so GitLab and Jenkins can show the results."""
    suites: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        suites.setdefault(xml_safe(result["suite"]), []).append(result)
    job_name = xml_safe(job_name)
    root = ElementTree.Element("testsuites", name=job_name)
    for suite, cases in suites.items():
        counts = Counter(case["result"] for case in cases)
        node = ElementTree.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                                      failures=str(counts["fail"]), skipped=str(counts["skip"] + counts["unknown"]),
                                      errors="0")
        for case in cases:
            attributes = {"classname": f"{job_name}.{suite}", "name": xml_safe(case["case"])}
            if case.get("duration") is not None:
                attributes["time"] = f"{case['duration']:.3f}"
            element = ElementTree.SubElement(node, "testcase", attributes)
            if case["result"] == "fail":
                message = xml_safe(case.get("error_msg") or "failed")
                ElementTree.SubElement(element, "failure", message=message,
                                       type=xml_safe(case.get("error_type", "fail")))
            elif case["result"] in ("skip", "unknown"):
                ElementTree.SubElement(element, "skipped", message=str(case["result"]))
            if case.get("measurement") is not None:
                ElementTree.SubElement(element, "system-out").text = (
                    xml_safe(f"measurement: {case['measurement']} {case.get('units') or ''}".strip()))
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def summary_table(results: list[dict[str, Any]], state: str) -> str:
    """A short table of the test cases and the pass/fail counts, for the end of a run."""
    cases = [{**r, "suite": printable(str(r["suite"])), "case": printable(str(r["case"])),
              "units": printable(str(r.get("units") or ""))} for r in results if r["suite"] != "lava"]
    lines = []
    if cases:
        width_suite = max(len("suite"), *(len(str(r["suite"])) for r in cases))
        width_case = max(len("case"), *(len(str(r["case"])) for r in cases))
        lines.append(f"{'suite':<{width_suite}}  {'case':<{width_case}}  result  measurement")
        for r in cases:
            measure = "" if r.get("measurement") is None else f"{r['measurement']:g} {r['units']}".strip()
            lines.append(f"{r['suite']:<{width_suite}}  {r['case']:<{width_case}}  {r['result']:<6}  {measure}")
    counts = Counter(r["result"] for r in cases)
    lines.append(f"job {state}: pass {counts['pass']}, fail {counts['fail']}, skip {counts['skip']}, "
                 f"unknown {counts['unknown']}")
    return "\n".join(lines)
