"""Device dictionaries (jinja2) over device-type templates, and the dispatcher configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from conftest import DEVICES, ROOT, SAMPLES

from pipeline.device import device_config_text, load_device, load_device_dictionary, parse_device
from pipeline.device_dict import (
    PROJECT_TEMPLATES,
    check_job_context,
    device_types_path,
    is_device_dictionary,
    render_device_dictionary,
)
from pipeline.dispatcher_config import DispatcherConfig
from pipeline.errors import ProblemList
from pipeline.parser import parse_job
from pipeline.runner import describe_pipeline

if TYPE_CHECKING:
    from lava_reference import LavaTemplates

pytest_plugins = ["lava_reference"]  # the session fixture lava_templates

PDU = "pduclient --daemon pdu01 --hostname pdu01 --command {} --port {}"


def dictionary(extends: str, **variables: object) -> str:
    lines = [f"{{% extends '{extends}' %}}"]
    lines += [f"{{% set {name} = {value!r} %}}" for name, value in variables.items()]
    return "\n".join(lines) + "\n"


def lab_board(extends: str, telnet_port: int, pdu_port: int) -> str:
    return dictionary(extends, connection_command=f"telnet 127.0.0.1 {telnet_port}",
                      power_on_command=PDU.format("on", pdu_port), power_off_command=PDU.format("off", pdu_port),
                      hard_reset_command=PDU.format("reboot", pdu_port))


# The project's boards as device dictionaries: (board, dictionary, dispatcher.yaml).
OUR_BOARDS = [
    ("kvm01", dictionary("kvm.jinja2"), {}),
    ("local01", dictionary("local-shell.jinja2"), {}),
    ("bbb01", lab_board("beaglebone-black.jinja2", 7001, 5), {"dispatcher_ip": "192.168.0.2"}),
    ("panda01", lab_board("panda.jinja2", 7002, 6), {"dispatcher_tftp_ip": "192.168.0.2"}),
    ("arm64-uboot01", dictionary("arm64-uboot.jinja2"), {}),
    ("arm-uboot01", dictionary("arm-uboot.jinja2"), {}),
]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems_of(call, *args, **kwargs) -> list[str]:
    with pytest.raises(ProblemList) as caught:
        call(*args, **kwargs)
    return caught.value.problems


# ---------------------------------------------------------------- (a) the project's templates


@pytest.mark.parametrize("board,text,dispatcher", OUR_BOARDS, ids=[b[0] for b in OUR_BOARDS])
def test_our_templates_render_our_boards(tmp_path, board, text, dispatcher):
    config = write(tmp_path, "dispatcher.yaml", yaml.safe_dump(dispatcher))
    path = write(tmp_path, f"{board}.jinja2", text)
    rendered = load_device(path, dispatcher=DispatcherConfig.load(config), device_types=[])
    sample = load_device(DEVICES / f"{board}.yaml")
    assert rendered.model_dump() == sample.model_dump()


def test_a_qemu_dictionary_is_kvm01_of_device_type_qemu():
    device = load_device_dictionary(dictionary("qemu.jinja2", arch="amd64"), name="kvm01")
    expected = load_device(DEVICES / "kvm01.yaml").model_dump()
    assert device.device_type == "qemu"
    assert {**device.model_dump(), "device_type": "kvm"} == expected


def test_the_job_context_chooses_what_the_template_lets_it():
    text = dictionary("qemu.jinja2", mac_addr="52:54:00:12:34:59")
    device = load_device_dictionary(text, name="qemu01", job_context={"arch": "arm64", "memory": 1024,
                                                                      "extra_options": ["-smp 2", 4]})
    qemu = device.boot_method("qemu")["parameters"]
    assert qemu["options"][-2:] == ["-smp 2", "4"]
    assert qemu["command"] == "qemu-system-aarch64"
    assert qemu["options"][:2] == ["-machine virt,accel=tcg", "-cpu cortex-a57"]
    assert "-m 1024" in qemu["options"]
    assert any(o.endswith("romfile=,mac=52:54:00:12:34:59") for o in qemu["options"])
    # No IDE on virt: the job's disk is virtio, so the overlay drive after it is the second one.
    assert qemu["image_arg"] == "-drive format=raw,if=virtio,file={image}"
    assert qemu["overlay_device"] == "/dev/vdb"


def test_the_dictionary_wins_over_the_job_context():
    text = dictionary("kvm.jinja2", memory=512)
    device = load_device_dictionary(text, name="kvm01", job_context={"memory": 4096})
    assert "-m 512" in device.boot_method("qemu")["parameters"]["options"]


def test_scheduled_device_name_and_type_are_variables():
    text = "device_type: {{ scheduled_device_type }}-x\nhostname: {{ scheduled_device_name }}\n"
    assert render_device_dictionary(text, name="board7") == "device_type: -x\nhostname: board7"
    text = "{% extends 'kvm.jinja2' %}{% block constants %}x: {{ scheduled_device_type }}\n{% endblock %}"
    assert render_device_dictionary(text, name="b").startswith("x: kvm\n")


def test_the_job_context_may_only_set_context_variables_on_one_line():
    problems = problems_of(check_job_context, {"power_on_command": "reboot", "memory": "1\ncommands: {}",
                                               "arch": {"a": 1}, "cpu": ["max", "host"]})
    assert len(problems) == 3
    assert problems[0].startswith("context.power_on_command: not a context variable")
    assert problems[1] == "context.memory: must be one line (no line breaks or control characters)"
    assert problems[2] == "context.arch: must be a number, a string or a list of them"
    assert check_job_context({"mine": 1}, ["mine"]) == {"mine": 1}
    assert check_job_context({"no_kvm": True, "extra_options": ["-smp 2", 3]}) == {"no_kvm": True,
                                                                                  "extra_options": ["-smp 2", 3]}


def test_a_job_context_cannot_give_the_board_commands():
    text = dictionary("kvm.jinja2")
    problems = problems_of(load_device_dictionary, text, job_context={"memory": "256\ncommands:\n  power_on: x"})
    assert problems == ["context.memory: must be one line (no line breaks or control characters)"]


def test_a_worker_can_register_the_rendered_configuration():
    text = lab_board("beaglebone-black.jinja2", 7001, 5)
    config = DispatcherConfig(dispatcher_ip="192.168.0.2")
    registered = device_config_text(text, name="bbb01", dispatcher=config)
    assert not is_device_dictionary(registered)
    assert parse_device(registered).model_dump() == load_device(DEVICES / "bbb01.yaml").model_dump()
    plain = (DEVICES / "kvm01.yaml").read_text()
    assert device_config_text(plain, name="kvm01") == plain


def test_plain_yaml_devices_are_not_dictionaries():
    for path in DEVICES.glob("*.yaml"):
        assert not is_device_dictionary(path.read_text()), path
    for _, text, _ in OUR_BOARDS:
        assert is_device_dictionary(text)
    assert is_device_dictionary("device_type: {{ t }}\n")


def test_device_types_path_order(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    defaults = (PROJECT_TEMPLATES, Path("/etc/lava-server/dispatcher-config/device-types"),
                Path("/usr/share/lava-server/device-types"))
    assert device_types_path([], environ={}) == defaults
    assert device_types_path([f"{one}:{two}", str(one)], environ={}) == (one, two, *defaults)
    env = {"LAVA_DISPATCH_DEVICE_TYPES": f"{two}{os.pathsep}{one}"}
    assert device_types_path(None, environ=env) == (two, one, *defaults)
    assert device_types_path([str(one)], environ=env) == (one, *defaults)


def test_a_lab_directory_overrides_the_project_templates(tmp_path):
    write(tmp_path, "kvm.jinja2", "{% extends 'qemu.jinja2' %}{% set memory = memory | default(2048) %}")
    device = load_device_dictionary(dictionary("kvm.jinja2"), name="kvm01", device_types=[str(tmp_path)])
    assert "-m 2048" in device.boot_method("qemu")["parameters"]["options"]
    assert device.device_type == "kvm"


def test_the_dispatcher_configuration(tmp_path, monkeypatch):
    path = write(tmp_path, "dispatcher.yaml", textwrap.dedent("""\
        # LAVA's example file is all comments; keys of a lab's own are kept
        dispatcher_ip: 192.168.0.2
        dispatcher_nfs_ip: 192.168.0.3:2049
        prefix: lab1-
        http_url_format_string: "https://cache.example.org/fetch/?url=%s"
        tftp_size_limit: 100000000
        extra_context_variables: [board_flavour]
        my_lab_key: {a: 1}
        """))
    config = DispatcherConfig.load(path)
    assert (config.ip_for(), config.ip_for("nfs"), config.ip_for("tftp")) == ("192.168.0.2", "192.168.0.3:2049",
                                                                               "192.168.0.2")
    assert config.prefix == "lab1-" and config.tftp_size_limit == 100000000
    assert config.my_lab_key == {"a": 1}
    assert config.template_variables()["dispatcher_nfs_ip"] == "192.168.0.3:2049"
    assert DispatcherConfig.parse("# only comments\n").ip_for() is None
    monkeypatch.setenv("LAVA_DISPATCH_DISPATCHER_CONFIG", str(path))
    assert DispatcherConfig.from_env().dispatcher_ip == "192.168.0.2"
    # The environment's configuration reaches the templates of a device file (a worker's).
    board = write(tmp_path, "bbb07.jinja2", lab_board("beaglebone-black.jinja2", 7007, 7))
    device = load_device(board)
    assert (device.parameters["tftp_server_ip"], device.parameters["dispatcher_ip"]) == ("192.168.0.2",) * 2
    assert device.parameters["nfs_server_ip"] == "192.168.0.3:2049"
    assert device.hostname == "bbb07" and device.shell_prompts()[0] == "root@bbb07:~# "
    # ... and its extra_context_variables open the job context to more variables.
    assert load_device(board, job_context={"board_flavour": "rev-c"}).device_type == "beaglebone-black"


def test_a_wrong_dispatcher_configuration_names_its_keys(tmp_path):
    path = write(tmp_path, "d.yaml", "dispatcher_ip: 'a b'\nprefix: ../x\ntftp_size_limit: -1\n")
    problems = problems_of(DispatcherConfig.load, path)
    assert sorted(p.split(": ")[0] for p in problems) == ["d.yaml:.dispatcher_ip", "d.yaml:.prefix",
                                                          "d.yaml:.tftp_size_limit"]
    assert problems_of(DispatcherConfig.load, tmp_path / "none.yaml") == [
        f"dispatcher config {str(tmp_path / 'none.yaml')!r}: does not exist"]
    assert problems_of(DispatcherConfig.parse, "- a\n", "x.yaml") == [
        "x.yaml: the dispatcher configuration must be a YAML mapping"]


@pytest.mark.parametrize("text,expected", [
    ("{% extends 'nope.jinja2' %}", "d.jinja2: device-type template 'nope.jinja2' not found in the device-types "
                                    "path: "),
    ("{% extends 'kvm.jinja2' %}\n{% set memory = %}", "d.jinja2 line 2: template syntax error: "),
    ("{{ ''.__class__.__mro__ }}", "d.jinja2 line 1: access to attribute '__class__' of a 'str' object is not "
                                   "allowed (device-type templates are rendered in a sandbox)"),
    ("a: 1\n{{ cycler.__init__.__globals__ }}", "d.jinja2 line 2: access to attribute '__init__' "),
    ("{% if ''.__class__ %}x{% endif %}", "d.jinja2 line 1: access to attribute '__class__' "),
    ("{{ lipsum|attr('__globals__') }}", "d.jinja2 line 1: access to attribute '__globals__' "),
    ("{% set s = 'x' * 1000 * 1000 * 1000 %}", "d.jinja2 line 1: '*' would build a value of 1000000000 items"),
    ("{{ 7 ** 100000 }}", "d.jinja2 line 1: '**' would build a number of more than 4096 bits"),
    ("{% for i in range(20000) %}{{ 'y' * 100 }}{% endfor %}", "d.jinja2: the rendered device configuration is "
                                                               "larger than 1048576 characters"),
    ("{{ foo.bar }}", "d.jinja2 line 1: undefined value: 'foo' is undefined"),
    ("device_type: kvm\nfoo: {{ 'bar: baz' }}\nx: 1\n", "d.jinja2 (rendered): device YAML line 2, column 9: "
                                                      "mapping values are not allowed"),
    ("{{ '- a' }}", "d.jinja2 (rendered): the device configuration must be a YAML mapping"),
    ("hostname: x\n{{ '' }}", "d.jinja2:.device_type: required but missing"),
])
def test_rendering_errors_are_clean(text, expected):
    problems = problems_of(load_device_dictionary, text, name="d", source="d.jinja2")
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    if "(rendered) line" in expected:
        assert problems[0].endswith(": 'foo: bar: baz'")  # the rendered line, shown


def test_an_error_in_a_template_names_the_template_file(tmp_path):
    write(tmp_path, "broken.jinja2", "a: 1\n{% if %}\n")
    write(tmp_path, "undefined.jinja2", "a: 1\nb: {{ x.y }}\n")
    assert problems_of(load_device_dictionary, dictionary("broken.jinja2"), device_types=[tmp_path]) == [
        "broken.jinja2 line 2: template syntax error: Expected an expression, got 'end of statement block'"]
    assert problems_of(load_device_dictionary, dictionary("undefined.jinja2"), device_types=[tmp_path]) == [
        "undefined.jinja2 line 2: undefined value: 'x' is undefined"]


# ---------------------------------------------------------------- (b) LAVA's templates (Debian's lava-server)


def lava_device(lava: LavaTemplates, text: str, **kwargs):
    return load_device_dictionary(text, device_types=[lava.directory], **kwargs)


def test_lava_qemu_template_as_lava_tests_use_it(lava_templates):
    text = dictionary("qemu.jinja2", mac_addr="52:54:00:12:34:59", memory="1024")
    device = lava_device(lava_templates, text, name="qemu01", job_context={"arch": "amd64"})
    assert (device.device_type, device.hostname) == ("qemu", "qemu01")
    qemu = device.boot_method("qemu")["parameters"]
    assert qemu["command"] == "qemu-system-x86_64"
    assert "-m 1024" in qemu["options"]
    assert any("macaddr=52:54:00:12:34:59" in option for option in qemu["options"])
    arm = lava_device(lava_templates, text, job_context={"arch": "arm64"})
    assert arm.boot_method("qemu")["parameters"]["command"] == "qemu-system-aarch64"


def test_lava_beaglebone_black_template_builds_our_pipeline(lava_templates):
    text = lab_board("beaglebone-black.jinja2", 6000, 8)
    config = DispatcherConfig(dispatcher_ip="192.168.0.2")
    device = lava_device(lava_templates, text, name="bbb-01", dispatcher=config)
    assert device.device_type == "beaglebone-black"
    assert device.commands.connect == "telnet 127.0.0.1 6000"
    assert device.commands.power_on == PDU.format("on", 8)
    uboot = device.boot_method("u-boot")
    assert {"nfs", "ramdisk"} <= set(uboot)
    assert "{BOOTX}" in uboot["nfs"]["commands"]
    # A LAVA job for the board (the seed's TFTP + NFS example) builds its pipeline on LAVA's device.
    job = parse_job((SAMPLES / "uboot-nfs.yaml").read_text())
    names = [action["name"] for action in describe_pipeline(job, device)]
    assert "uboot-action" in names and "lava-test-shell" in names


def test_every_lava_template_renders_and_loads(lava_templates):
    names = lava_templates.names()
    assert len(names) > 100, lava_templates  # Debian's 2023.01 has 363
    failures = {}
    for name in names:
        try:
            device = lava_device(lava_templates, dictionary(name), name="board01")
            assert device.device_type == name.removesuffix(".jinja2")
        except ProblemList as exc:
            failures[name] = exc.problems
    assert failures == {}


def test_a_lava_device_our_engine_cannot_run_is_rejected_by_name(lava_templates):
    """LAVA's kvm offers deploy method ``image`` (LAVA's tmpfs deploy accepts it); the problem names it."""
    device = lava_device(lava_templates, dictionary("kvm.jinja2"), name="kvm01", job_context={"arch": "amd64"})
    job = parse_job((SAMPLES / "kvm.yaml").read_text())
    try:
        describe_pipeline(job, device)
    except ProblemList as exc:
        assert any("offers deploy methods image" in p for p in exc.problems), exc.problems


# ---------------------------------------------------------------- (c) the command line


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAVA_DISPATCH_")}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "tasks.cli", *argv], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)


def assert_clean(result: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for text in expected:
        assert text in result.stderr, result.stderr


def test_cli_validates_a_job_on_a_dictionary_with_a_lab_templates_dir(tmp_path):
    lab = tmp_path / "lab-types"
    lab.mkdir()
    write(lab, "kvm.jinja2", "{% extends 'qemu.jinja2' %}{% set action_timeout_execute_qemu = 77 %}")
    device = write(tmp_path, "kvm01.jinja2", dictionary("kvm.jinja2", memory=512))
    # Without failure_retry: the attempts of a retry share its timeout, which beats a device's named one.
    job = write(tmp_path, "kvm.yaml", (SAMPLES / "kvm.yaml").read_text().replace("failure_retry: 2", ""))
    result = cli("validate", str(job), "--device", str(device), "--device-types", str(lab))
    assert_clean(result, 0)
    output = yaml.safe_load(result.stdout)
    assert output["device_type"] == "kvm"
    assert [a["timeout"] for a in output["pipeline"] if a["name"] == "execute-qemu"] == [77.0]
    # The same through the environment; without the lab's directory, the project's kvm.jinja2 (30 s).
    result = cli("validate", str(job), "--device", str(device),
                 env={"LAVA_DISPATCH_DEVICE_TYPES": str(lab)})
    assert [a["timeout"] for a in yaml.safe_load(result.stdout)["pipeline"] if a["name"] == "execute-qemu"] == [77.0]
    result = cli("validate", str(job), "--device", str(device))
    assert [a["timeout"] for a in yaml.safe_load(result.stdout)["pipeline"] if a["name"] == "execute-qemu"] == [30.0]


def test_cli_renders_with_the_job_context(tmp_path):
    job = (SAMPLES / "kvm.yaml").read_text() + "context:\n  power_on_command: 'touch /tmp/x'\n"
    path = write(tmp_path, "job.yaml", job)
    device = write(tmp_path, "kvm01.jinja2", dictionary("kvm.jinja2"))
    assert_clean(cli("validate", str(path), "--device", str(device)), 1,
                 "context.power_on_command: not a context variable a job may set")


@pytest.mark.parametrize("text,command,code,expected", [
    ("{% extends 'no-such-board.jinja2' %}", "validate", 1, "template 'no-such-board.jinja2' not found in"),
    ("{% extends 'kvm.jinja2' %}\n{% set memory = ( %}", "validate", 1, "d.jinja2 line 2: template syntax error"),
    ("{{ ''.__class__.__mro__ }}", "validate", 1, "access to attribute '__class__' of a 'str' object"),
    ("{{ cycler.__init__.__globals__ }}", "validate", 1, "access to attribute '__init__' of a 'type' object"),
    ("{{ cycler.__init__.__globals__ }}", "run", 2, "access to attribute '__init__' of a 'type' object"),
])
def test_cli_errors_are_clean(tmp_path, text, command, code, expected):
    device = write(tmp_path, "d.jinja2", text)
    result = cli(command, str(SAMPLES / "kvm.yaml"), "--device", str(device), "--device-types", str(tmp_path),
                 "--output-dir", str(tmp_path / "out")) if command == "run" else \
        cli(command, str(SAMPLES / "kvm.yaml"), "--device", str(device), "--device-types", str(tmp_path))
    assert_clean(result, code, expected)
    assert not (tmp_path / "out").exists()


def test_cli_missing_dispatcher_configuration_is_a_usage_error(tmp_path):
    device = write(tmp_path, "kvm01.jinja2", dictionary("kvm.jinja2"))
    result = cli("validate", str(SAMPLES / "kvm.yaml"), "--device", str(device), "--dispatcher",
                 str(tmp_path / "none.yaml"))
    assert_clean(result, 2, "dispatcher config file", "does not exist")


def test_cli_with_lava_templates(lava_templates, tmp_path):
    device = write(tmp_path, "bbb-01.jinja2", lab_board("beaglebone-black.jinja2", 6000, 8))
    config = write(tmp_path, "dispatcher.yaml", "dispatcher_ip: 192.168.0.2\n")
    result = cli("validate", str(SAMPLES / "uboot-nfs.yaml"), "--device", str(device), "--dispatcher", str(config),
                 "--device-types", str(lava_templates.directory))
    assert_clean(result, 0)
    assert yaml.safe_load(result.stdout)["device_type"] == "beaglebone-black"
