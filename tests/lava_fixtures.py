"""LAVA's own dispatcher fixtures against this dispatcher: accepted?, and how close the pipelines are.

LAVA's tests pair a sample job (tests/lava_dispatcher/sample_jobs) with a
device dictionary (tests/lava_scheduler_app/devices, rendered over the
device-type templates of etc/dispatcher-config/device-types) and compare
the pipeline with a reference (tests/lava_dispatcher/pipeline_refs).
``CASES`` is the in-scope part of those pairings (qemu/kvm, u-boot with
tftp/nfs/ramdisk, usb/sata, multinode): only names, the files stay LAVA's.

A LAVA source tree is GPL and is never copied here: the comparison runs on
the tree that ``$LAVA_DISPATCH_LAVA_TREE`` names (a checkout of LAVA, e.g.
at 2026.07), and otherwise on the project's own equivalent jobs and
dictionaries (tests/lava_compat/, written for this dispatcher in LAVA's
forms, over the device-type templates of Debian's lava-server package).

Name match: both pipelines are trees of action names; at each level the
children are aligned by name (longest common subsequence), matched actions
are compared again one level down. The share is LAVA's actions matched
over all of LAVA's actions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.builder import build_pipeline
from pipeline.device import Device, load_device_dictionary
from pipeline.errors import ProblemList
from pipeline.job import Job
from pipeline.parser import parse_job

TREE_VAR = "LAVA_DISPATCH_LAVA_TREE"
KVM_CONTEXT = {"arch": "amd64", "no_kvm": True}  # LAVA's tests render kvm01 with this context
USER_COMMAND = "{% set user_commands = {'user_command_to_run': {'do': 'echo do', 'undo': 'echo undo'}} %}\n"


@dataclass(frozen=True)
class Case:
    job: str  # the sample job's file name
    device: str  # the device dictionary's name (without .jinja2)
    ref: str | None = None  # the pipeline reference's file name
    context: dict[str, Any] | None = None  # replaces the job's context, as LAVA's tests do
    device_extra: str = ""  # appended to the dictionary: what the job needs of a device that LAVA's lacks


# The in-scope pairings of LAVA's dispatcher tests (test_kvm, test_uboot, test_removable, test_multi,
# test_multinode, test_defs, test_command).
CASES: tuple[Case, ...] = (
    Case("kvm.yaml", "qemu01", "kvm.yaml", KVM_CONTEXT),
    Case("kvm-inline.yaml", "kvm01", "kvm-inline.yaml", KVM_CONTEXT),
    Case("kvm-noos.yaml", "kvm01", "kvm-noos.yaml", KVM_CONTEXT),
    Case("kvm-qcow2.yaml", "kvm01", "kvm-qcow2.yaml", KVM_CONTEXT),
    Case("kvm-multi.yaml", "kvm01", "kvm-multi.yaml", KVM_CONTEXT),
    Case("kvm-local.yaml", "kvm01", "kvm-local.yaml", KVM_CONTEXT),
    Case("kvm-overlays.yaml", "kvm01", "kvm-overlays.yaml", KVM_CONTEXT),
    Case("qemu-reboot.yaml", "kvm01", "qemu-reboot.yaml", KVM_CONTEXT),
    # LAVA's test only builds it: kvm01 lists no user commands, and LAVA's validate refuses the job on it too.
    Case("kvm-command.yaml", "kvm01", "kvm-command.yaml", KVM_CONTEXT, USER_COMMAND),
    Case("qemu-nfs.yaml", "kvm02", "qemu-nfs.yaml"),
    Case("kvm-context.yaml", "qemu01"),
    Case("kvm-params.yaml", "kvm01", None, KVM_CONTEXT),
    Case("kvm-install.yaml", "kvm01", None, KVM_CONTEXT),
    Case("kvm-notest.yaml", "kvm01", None, KVM_CONTEXT),
    Case("kvm-multinode-client.yaml", "kvm01", None, KVM_CONTEXT),
    Case("kvm-multinode-server.yaml", "kvm01", None, KVM_CONTEXT),
    Case("uboot-ramdisk.yaml", "bbb-03", "uboot.yaml"),
    Case("uboot-ramdisk.yaml", "bbb-01", "uboot-ramdisk.yaml"),
    Case("uboot-persistent.yaml", "bbb-03", "uboot-persistent.yaml"),
    Case("uboot-multiple.yaml", "bbb-03", "uboot-multiple.yaml"),
    Case("uboot-ramdisk-inline-commands.yaml", "bbb-03", "uboot-ramdisk-inline-commands.yaml"),
    Case("uboot.yaml", "bbb-03"),
    Case("uboot-nfs.yaml", "bbb-01"),
    Case("bbb-skip-install.yaml", "bbb-03"),
    Case("bbb-nfs-url.yaml", "bbb-03"),
    Case("bbb-ramdisk-nfs.yaml", "bbb-03"),
    Case("bbb-uinitrd-nfs.yaml", "bbb-03"),
    Case("x15-nfs.yaml", "x15-01", "x15-nfs.yaml"),
    Case("zcu102-ramdisk.yaml", "zcu102", "zcu102-ramdisk.yaml"),
    Case("cubietruck-removable.yaml", "cubie1", "cubietruck-removable.yaml"),
    Case("cubietruck-removable-with-writer.yaml", "cubie1", "cubietruck-removable-with-writer.yaml"),
    Case("juno-uboot-removable.yaml", "juno-uboot-01", "juno-uboot-removable.yaml"),
)


@dataclass(frozen=True)
class Source:
    """Where the jobs, dictionaries, references and templates of a comparison are."""

    jobs: Path
    devices: Path
    refs: Path
    templates: tuple[Path, ...]  # searched first, before the project's own templates
    label: str


def lava_tree_source(tree: Path) -> Source:
    return Source(tree / "tests/lava_dispatcher/sample_jobs", tree / "tests/lava_scheduler_app/devices",
                  tree / "tests/lava_dispatcher/pipeline_refs", (tree / "etc/dispatcher-config/device-types",),
                  f"LAVA tree {tree}")


def tree_from_env() -> Path | None:
    value = os.environ.get(TREE_VAR)
    return Path(value) if value else None


@dataclass
class Outcome:
    case: Case
    accepted: bool = False
    problems: list[str] = field(default_factory=list)
    matched: int = 0  # LAVA's actions found in ours at their place
    total: int = 0  # LAVA's actions
    timeouts_equal: int = 0  # of the matched actions the job names a timeout for
    timeouts_named: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        return self.matched / self.total if self.total else None


# ---------------------------------------------------------------- trees of names


@dataclass
class Node:
    name: str
    timeout: float | None
    children: list[Node] = field(default_factory=list)


def compact_tree(items: Sequence[Any]) -> list[Node]:
    """The compact form of tests/lava_compat/expected: ``name``, ``name@seconds`` or ``{name: [children]}``."""
    nodes = []
    for item in items:
        label, children = next(iter(item.items())) if isinstance(item, dict) else (item, [])
        name, _, seconds = str(label).partition("@")
        nodes.append(Node(name, float(seconds) if seconds else None, compact_tree(children)))
    return nodes


def tree(described: Sequence[Any]) -> list[Node]:
    """A flat list of {level, name, timeout} (ours), nested ``pipeline:`` lists (LAVA's) or the compact form."""
    if described and not all(isinstance(item, dict) and "name" in item for item in described):
        return compact_tree(described)
    if described and any("pipeline" in item for item in described):
        return [Node(str(item["name"]), _seconds(item.get("timeout")), tree(item.get("pipeline") or []))
                for item in described]
    roots: list[Node] = []
    by_level: dict[str, Node] = {}
    for item in described:
        level = str(item["level"])
        node = Node(str(item["name"]), _seconds(item.get("timeout")))
        by_level[level] = node
        parent = by_level.get(level.rsplit(".", 1)[0]) if "." in level else None
        (parent.children if parent else roots).append(node)
    return roots


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _lcs(ours: list[Node], theirs: list[Node]) -> list[tuple[Node, Node]]:
    rows = [[0] * (len(theirs) + 1) for _ in range(len(ours) + 1)]
    for i in range(len(ours) - 1, -1, -1):
        for j in range(len(theirs) - 1, -1, -1):
            rows[i][j] = (rows[i + 1][j + 1] + 1 if ours[i].name == theirs[j].name
                          else max(rows[i + 1][j], rows[i][j + 1]))
    pairs, i, j = [], 0, 0
    while i < len(ours) and j < len(theirs):
        if ours[i].name == theirs[j].name:
            pairs.append((ours[i], theirs[j]))
            i, j = i + 1, j + 1
        elif rows[i + 1][j] >= rows[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def count(nodes: list[Node]) -> int:
    return sum(1 + count(node.children) for node in nodes)


def compare(ours: list[Node], theirs: list[Node], outcome: Outcome, named: set[str], where: str = "") -> None:
    """Add to ``outcome`` LAVA's actions matched in ours, level by level, and the named timeouts compared."""
    pairs = _lcs(ours, theirs)
    matched = {id(lava) for _, lava in pairs}
    for lava in theirs:
        if id(lava) not in matched:
            outcome.mismatches.append(f"{where}/{lava.name}: missing (ours: {', '.join(n.name for n in ours)})")
    for mine, lava in pairs:
        outcome.matched += 1
        if lava.name in named and (lava.timeout is not None or mine.timeout is None):
            outcome.timeouts_named += 1
            if mine.timeout == lava.timeout:
                outcome.timeouts_equal += 1
            else:
                outcome.mismatches.append(f"{where}/{lava.name}: timeout {mine.timeout} s, LAVA's {lava.timeout} s")
        compare(mine.children, lava.children, outcome, named, f"{where}/{lava.name}")


def named_timeouts(job: Job) -> set[str]:
    names = set(job.header.timeouts.actions)
    for block in job.flat_actions():
        if block.settings is not None:
            names |= set(block.settings.timeouts or {})
    return names


OWN = Path(__file__).parent / "lava_compat"
# The project's own jobs and dictionaries in LAVA's forms, each like one of LAVA's fixtures; expected/ holds
# the action names LAVA gives them (the fixtures' references).
OWN_CASES: tuple[Case, ...] = (
    Case("kvm-two-disks.yaml", "qemu-amd64", "kvm-two-disks.yaml"),
    Case("bbb-ramdisk.yaml", "bbb-lab", "bbb-ramdisk.yaml"),
    Case("cubie-usb.yaml", "cubie-lab", "cubie-usb.yaml"),
)


def own_source(templates: Path) -> Source:
    return Source(OWN / "jobs", OWN / "devices", OWN / "expected", (templates,), "the project's LAVA-form jobs")


# ---------------------------------------------------------------- one case


def job_text(source: Source, case: Case) -> str:
    text = (source.jobs / case.job).read_text()
    if case.context is None:
        return text
    data = yaml.safe_load(text)
    data["context"] = dict(case.context)
    return yaml.safe_dump(data, sort_keys=False)


def load_case(source: Source, case: Case) -> tuple[Job, Device]:
    job = parse_job(job_text(source, case))
    dictionary = (source.devices / f"{case.device}.jinja2").read_text() + case.device_extra
    device = load_device_dictionary(dictionary, name=case.device, source=f"{case.device}.jinja2",
                                    job_context=job.header.context,
                                    device_types=[*source.templates, source.devices],
                                    job_device_type=job.header.device_type)
    return job, device


def run_case(source: Source, case: Case) -> Outcome:
    outcome = Outcome(case)
    try:
        job, device = load_case(source, case)
        role = job.multinode.role if job.multinode is not None else None
        built = build_pipeline(job, device, role)
    except ProblemList as exc:
        outcome.problems = list(exc.problems)
        return outcome
    outcome.accepted = True
    ref = source.refs / case.ref if case.ref else None
    if ref is not None and ref.is_file():
        theirs = tree(yaml.safe_load(ref.read_text()))
        outcome.total = count(theirs)
        compare(tree(built.describe()), theirs, outcome, named_timeouts(job))
    return outcome


def run_all(source: Source, cases: Sequence[Case] = CASES) -> list[Outcome]:
    return [run_case(source, case) for case in cases if (source.jobs / case.job).is_file()]


def table(outcomes: Sequence[Outcome]) -> str:
    """job, device, accepted?, name match %, named timeouts equal; then the medians."""
    lines = [f"{'job':40} {'device':14} {'accepted':8} {'names':>6} {'timeouts':>8}"]
    shares = []
    for out in outcomes:
        share = out.share
        if share is not None:
            shares.append(share)
        names = f"{share * 100:5.0f}%" if share is not None else "     -"
        timeouts = f"{out.timeouts_equal}/{out.timeouts_named}" if out.timeouts_named else "-"
        lines.append(f"{out.case.job:40} {out.case.device:14} {'yes' if out.accepted else 'NO':8} {names:>6} "
                     f"{timeouts:>8}")
    accepted = sum(out.accepted for out in outcomes)
    shares.sort()
    median = shares[len(shares) // 2] * 100 if shares else 0.0
    lines.append(f"accepted {accepted}/{len(outcomes)}; name match over {len(shares)} references: "
                 f"median {median:.0f}%, mean {sum(shares) / len(shares) * 100 if shares else 0:.0f}%")
    return "\n".join(lines)


if __name__ == "__main__":  # python tests/lava_fixtures.py LAVA_TREE [-v]
    import sys

    results = run_all(lava_tree_source(Path(sys.argv[1])))
    print(table(results))
    if "-v" in sys.argv:
        for result in results:
            for line in result.problems + result.mismatches:
                print(f"{result.case.job} on {result.case.device}: {line}")
