"""The registry of methods, the layout of the engine, and the proof that a method is one module.

docs/engine.md shows a whole boot method; the last tests here register that
very text after the built-in methods (in a process of its own, so that the
engine's registry stays as shipped for the other tests) and build a job
with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import DEVICES, ROOT, SAMPLES

from pipeline.blocks import ActionBase
from pipeline.builder import build_pipeline
from pipeline.builtin import load_builtin
from pipeline.device import load_device
from pipeline.errors import RegistryError
from pipeline.parser import parse_job
from pipeline.registry import Registry
from pipeline.strategy import Strategy

# ---------------------------------------------------------------- the registry


class OneModel(ActionBase):
    pass


class OtherModel(ActionBase):
    pass


def test_a_method_name_is_registered_once():
    registry = Registry()
    registry.add_model("boot", ("warp",), OneModel)
    with pytest.raises(RegistryError, match=r"boot method 'warp' is registered twice: .*OneModel and .*OtherModel"):
        registry.add_model("boot", ("warp",), OtherModel)


def test_a_kind_without_selector_has_one_model():
    registry = Registry()
    registry.add_model("test", (), OneModel)
    with pytest.raises(RegistryError, match="the test block model is registered twice"):
        registry.add_model("test", (), OtherModel)
    with pytest.raises(RegistryError, match="test blocks have no selector key"):
        registry.add_model("test", ("named",), OtherModel)
    with pytest.raises(RegistryError, match="a boot model names the value"):
        registry.add_model("boot", (), OtherModel)
    with pytest.raises(RegistryError, match="'flash' is not a kind of action block"):
        registry.add_model("flash", ("x",), OtherModel)


def test_strategies_are_asked_by_priority_and_named_once():
    registry = Registry()
    low = type("Low", (Strategy,), {})
    high = type("High", (Strategy,), {})
    also = type("Also", (Strategy,), {})
    registry.add_strategy("boot", low, 1)
    registry.add_strategy("boot", high, 10)
    registry.add_strategy("boot", also, 10)
    assert registry.strategies_for("boot") == [high, also, low]
    with pytest.raises(RegistryError, match="boot strategy 'Low' is registered twice"):
        registry.add_strategy("boot", type("Low", (Strategy,), {}), 5)


def test_the_built_in_methods_in_their_order():
    registry = load_builtin()
    assert registry.choices("deploy") == ["tmpfs", "tftp", "usb", "sata", "nfs"]
    assert registry.choices("boot") == ["qemu", "qemu-nfs", "u-boot", "minimal"]
    assert [m.__name__ for m in registry.models_of("deploy")] == ["DeployTmpfs", "DeployTftp", "DeployMedia",
                                                                  "DeployNfs"]
    assert [s.__name__ for s in registry.strategies_for("boot")] == ["QemuBoot", "QemuNfsBoot", "UBootBoot",
                                                                     "MinimalBoot"]
    for kind in ("deploy", "boot", "test", "command", "submit"):
        assert registry.strategies_for(kind), kind
    assert {"http-download", "file-download", "lava-test-shell", "uboot-action"} <= registry.action_names


def test_urls_come_from_each_deploy_model():
    job = parse_job((SAMPLES / "uboot-nfs.yaml").read_text())
    places = [place for place, _ in job.urls()]
    assert places and all(re.fullmatch(r"actions\[\d+\]\.(deploy\.(kernel|dtb|ramdisk|nfsrootfs|image|images\.\w+"
                                       r"\.url)|test\.definitions\[\d+\]\.repository)", p) for p in places), places


# ---------------------------------------------------------------- the deploy -> boot hand-off


def test_a_boot_reads_what_the_deploy_declared():
    job = parse_job((SAMPLES / "qemu-demo.yaml").read_text())
    built = build_pipeline(job, load_device(DEVICES / "kvm01.yaml"))
    declared = built.pipeline.actions[0].declared
    assert (declared.method, declared.overlay_ramdisk) == ("tmpfs", "ramdisk")
    assert declared.image_args == {"kernel": '-kernel {kernel} -append "console=ttyS0 panic=-1 quiet"',
                                   "ramdisk": "-initrd {ramdisk}"}
    # The overlay is in the ramdisk: the boot does not unpack a drive.
    assert "unpack-overlay-drive" not in [a.name for a in built.pipeline.walk()]


# ---------------------------------------------------------------- the layout


def test_no_import_cycle_anywhere_in_the_engine():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("pipeline")  # function-level and TYPE_CHECKING imports included
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.append((module, *chain))
    assert cycles == []


def test_the_engine_core_loads_no_method():
    code = ("import json, sys, pipeline.runner, pipeline.parser, pipeline.builder; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pipeline.actions'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert json.loads(out) == []  # until a job is parsed or a pipeline built: load_builtin()


# ---------------------------------------------------------------- a new method is one module


def example_method() -> str:
    text = (ROOT / "docs" / "engine.md").read_text()
    found = re.search(r"<!-- example method: tests/test_registry.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "docs/engine.md lost its example method"
    return found.group(1)


REBOOT_JOB = textwrap.dedent("""\
    device_type: kvm
    job_name: reboot
    timeouts: {job: {minutes: 5}, actions: {send-reboot: {seconds: 20}}}
    actions:
      - deploy: {to: tmpfs, os: oe, images: {image: {url: 'file:///nonexistent/disk.img'}}}
      - boot: {method: qemu}
      - boot: {method: reboot, prompts: ['root@lava-board:~# ']}
    """)


def run_with_example(tmp_path: Path, script: str) -> dict:
    (tmp_path / "reboot_example.py").write_text(example_method())
    (tmp_path / "job.yaml").write_text(REBOOT_JOB)
    device = (DEVICES / "kvm01.yaml").read_text().replace("      qemu:\n", "      reboot: {}\n      qemu:\n")
    (tmp_path / "device.yaml").write_text(device)
    code = textwrap.dedent("""\
        import json, sys
        from pipeline.builtin import load_builtin
        load_builtin()
        import reboot_example  # registers the method after the built-in ones
        from pipeline.device import load_device
        from pipeline.errors import ProblemList
        from pipeline.parser import job_json_schema, parse_job
        from pipeline.runner import describe_pipeline
        out = {}
        """) + textwrap.dedent(script) + "print(json.dumps(out))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_example_method_of_the_docs_is_a_whole_method(tmp_path):
    out = run_with_example(tmp_path, f"""\
        job_text = open("job.yaml").read()
        job = parse_job(job_text)
        out["pipeline"] = [(a["level"], a["name"], a["timeout"])
                           for a in describe_pipeline(job, load_device("device.yaml"))]
        boot = job_json_schema()["$defs"]["_ActionItemSchema"]["properties"]["boot"]["anyOf"]
        out["boot"] = [branch.get("$ref") for branch in boot]
        try:
            parse_job(job_text.replace("method: reboot", "method: rebot"))
        except ProblemList as exc:
            out["misspelt"] = exc.problems
        try:
            describe_pipeline(job, load_device({str(DEVICES / "kvm01.yaml")!r}))
        except ProblemList as exc:
            out["not offered"] = exc.problems
        """)
    assert [name for _, name, _ in out["pipeline"]][-9:] == ["reboot-boot", "send-reboot", "auto-login-action",
                                                              "login-action", "expect-shell-connection",
                                                              "export-device-env", "finalize", "power-off",
                                                              "read-feedback"]
    assert ["3.1", "send-reboot", 20] in out["pipeline"]  # a named timeout of the new action
    assert out["boot"] == ["#/$defs/BootQemu", "#/$defs/BootQemuNfs", "#/$defs/BootUBoot", "#/$defs/BootMinimal",
                           "#/$defs/BootReboot", None]
    assert out["misspelt"] == ["actions[2].boot.method: 'rebot' is not one of qemu, qemu-nfs, u-boot, minimal, reboot"]
    assert len(out["not offered"]) == 1
    assert "RebootBoot: device type 'kvm' offers boot methods qemu, not 'reboot'" in out["not offered"][0]


def test_the_example_passes_the_engines_lint(tmp_path):
    path = tmp_path / "reboot_example.py"
    path.write_text(example_method())
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), str(path)],
                          capture_output=True, text=True)
    if "No module named ruff" in ruff.stderr:
        pytest.skip("ruff is not installed")
    assert ruff.returncode == 0, ruff.stdout
