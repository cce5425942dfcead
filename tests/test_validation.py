"""Validation: every sample job is accepted; every mistake is rejected with its place.

Each invalid job below is a different mistake. The check is the one a lab
engineer sees: ``lava-dispatch validate`` exits 1 and names the place.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml
from conftest import DEVICES, SAMPLES, device_path, run_cli

HEAD = """
job_name: t
device_type: kvm
timeouts:
  job: {minutes: 10}
"""
DEPLOY = """
  - deploy:
      to: tmpfs
      image: http://example.com/disk.img.gz
      compression: gz
      os: debian
"""
BOOT = """
  - boot:
      method: qemu
      media: tmpfs
"""
TEST = """
  - test:
      definitions:
        - repository: http://example.com/tests.git
          from: git
          path: smoke.yaml
          name: smoke
"""
TFTP_HEAD = HEAD.replace("device_type: kvm", "device_type: beaglebone-black")
MULTINODE_HEAD = """
job_name: mn
timeouts:
  job: {minutes: 10}
protocols:
  lava-multinode:
    roles:
      server: {device_type: kvm, count: 1}
      client: {device_type: kvm, count: 1}
    timeout: {minutes: 5}
"""


def job(head: str = HEAD, *actions: str) -> str:
    return head + "actions:\n" + "".join(actions)


INVALID = [
    # (id, job text, device type, text that must appear in the error)
    ("deploy-without-to", job(HEAD, "  - deploy:\n      image: http://e.com/a.img\n      os: debian\n"), "kvm",
     "actions[0].deploy.to: required"),
    ("deploy-unknown-to", job(HEAD, "  - deploy:\n      to: ramfs\n      os: debian\n"), "kvm",
     "actions[0].deploy.to: 'ramfs' is not one of tmpfs, tftp, usb, sata, nfs"),
    ("tmpfs-without-image", job(HEAD, "  - deploy:\n      to: tmpfs\n      os: debian\n", BOOT), "kvm",
     "actions[0].deploy: tmpfs needs exactly one of image"),
    ("tmpfs-unknown-os", job(HEAD, DEPLOY.replace("os: debian", "os: windows"), BOOT), "kvm",
     "actions[0].deploy.os"),
    ("unknown-compression", job(HEAD, DEPLOY.replace("compression: gz", "compression: zip"), BOOT), "kvm",
     "actions[0].deploy.compression"),
    ("compressed-image-without-compression", job(HEAD, DEPLOY.replace("      compression: gz\n", ""), BOOT, TEST),
     "kvm", "actions[0].deploy.compression: the image looks compressed"),
    ("nfsrootfs-not-a-tarball", job(TFTP_HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n"
                                    "      nfsrootfs: http://e.com/rootfs.img\n      os: debian\n"),
     "beaglebone-black", "actions[0].deploy.nfsrootfs: 'http://e.com/rootfs.img' must be a gz, bz2 or xz tarball"),
    ("nfsrootfs-without-os", job(TFTP_HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n"
                                 "      nfsrootfs: http://e.com/rootfs.tar.gz\n"),
     "beaglebone-black", "actions[0].deploy.os: required with nfsrootfs"),
    ("ramdisk-type-without-ramdisk", job(TFTP_HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n"
                                         "      ramdisk-type: u-boot\n"),
     "beaglebone-black", "actions[0].deploy.ramdisk-type: given without a ramdisk"),
    ("usb-without-kernel", job(TFTP_HEAD, "  - deploy:\n      to: usb\n      image: http://e.com/a.img\n"
                               "      dtb: /boot/a.dtb\n      UUID: 1234-abcd\n      boot_part: 1\n"),
     "beaglebone-black", "actions[0].deploy.kernel: required"),
    ("usb-without-dtb", job(TFTP_HEAD, "  - deploy:\n      to: usb\n      image: http://e.com/a.img\n"
                            "      kernel: /boot/zImage\n      UUID: 1234-abcd\n      boot_part: 1\n"),
     "beaglebone-black", "actions[0].deploy.dtb: required"),
    ("sata-without-uuid", job(TFTP_HEAD, "  - deploy:\n      to: sata\n      image: http://e.com/a.img\n"
                              "      kernel: /boot/zImage\n      dtb: /boot/a.dtb\n      boot_part: 1\n"),
     "beaglebone-black", "actions[0].deploy.UUID: required"),
    ("usb-without-boot-part", job(TFTP_HEAD, "  - deploy:\n      to: usb\n      image: http://e.com/a.img\n"
                                  "      kernel: /boot/zImage\n      dtb: /boot/a.dtb\n      UUID: 1234-abcd\n"),
     "beaglebone-black", "actions[0].deploy.boot_part: required"),
    ("boot-without-method", job(HEAD, DEPLOY, "  - boot:\n      media: tmpfs\n"), "kvm",
     "actions[1].boot.method: required"),
    ("boot-unknown-method", job(HEAD, DEPLOY, "  - boot:\n      method: ubot\n"), "kvm",
     "actions[1].boot.method: 'ubot' is not one of qemu, qemu-nfs, u-boot, minimal"),
    ("uboot-without-commands", job(TFTP_HEAD, "  - boot:\n      method: u-boot\n      type: bootz\n"),
     "beaglebone-black", "actions[0].boot.commands: required"),
    ("uboot-unknown-type", job(TFTP_HEAD, "  - boot:\n      method: u-boot\n      commands: nfs\n      type: bootx\n"),
     "beaglebone-black", "actions[0].boot.type"),
    ("definition-without-from", job(HEAD, DEPLOY, BOOT, TEST.replace("          from: git\n", "")), "kvm",
     "actions[2].test.definitions[0].from: required but missing: the repository type is never guessed"),
    ("definition-from-bzr", job(HEAD, DEPLOY, BOOT, TEST.replace("from: git", "from: bzr")), "kvm",
     "actions[2].test.definitions[0].from: 'bzr' is not supported"),
    ("definition-without-path", job(HEAD, DEPLOY, BOOT, TEST.replace("          path: smoke.yaml\n", "")), "kvm",
     "actions[2].test.definitions[0].path: required"),
    ("definition-path-escapes", job(HEAD, DEPLOY, BOOT, TEST.replace("path: smoke.yaml", "path: ../../etc/x.yaml")),
     "kvm", "actions[2].test.definitions[0].path: '../../etc/x.yaml' must be a relative path"),
    ("git-repository-with-shell", job(HEAD, DEPLOY, BOOT,
                                      TEST.replace("http://example.com/tests.git", "'http://e.com/t.git;rm -rf /'")),
     "kvm", "actions[2].test.definitions[0].repository"),
    ("retry-and-repeat", job(HEAD, DEPLOY, BOOT.replace("media: tmpfs", "media: tmpfs\n      failure_retry: 2\n"
                                                                       "      repeat: 2")), "kvm",
     "actions[1].boot: failure_retry and repeat cannot be used on the same action"),
    ("deploy-with-repeat", job(HEAD, DEPLOY.replace("os: debian", "os: debian\n      repeat: 2"), BOOT), "kvm",
     "actions[0].deploy.repeat: deploy does not support repeat"),
    ("deploy-in-repeat-block", job(HEAD, DEPLOY, "  - repeat:\n      count: 2\n      actions:\n" +
                                   textwrap.indent(DEPLOY, "    ")), "kvm",
     "actions[1].repeat.actions[0]: only boot and test actions are supported inside repeat blocks"),
    ("repeat-block-without-count", job(HEAD, DEPLOY, "  - repeat:\n      actions:\n" + textwrap.indent(BOOT, "    ")),
     "kvm", "actions[1].repeat.count"),
    ("repeat-inside-repeat-block", job(HEAD, DEPLOY, "  - repeat:\n      count: 2\n      actions:\n" +
                                      textwrap.indent(BOOT.replace("media: tmpfs", "media: tmpfs\n      repeat: 2"),
                                                      "    ")), "kvm",
     "actions[1].repeat.actions[0].boot.repeat: an action inside a repeat block cannot repeat again"),
    ("block-timeout-over-job", job(HEAD, DEPLOY.replace("to: tmpfs", "to: tmpfs\n      timeout: {hours: 1}"), BOOT),
     "kvm", "actions[0].deploy.timeout: 3600 s exceeds the job timeout of 600 s"),
    ("action-timeout-over-job", job(HEAD.replace("job: {minutes: 10}", "job: {minutes: 10}\n  action: {minutes: 11}"),
                                    DEPLOY, BOOT), "kvm", "timeouts.action: 660 s exceeds the job timeout"),
    ("named-timeout-over-job", job(HEAD.replace("job: {minutes: 10}",
                                                "job: {minutes: 10}\n  actions:\n    http-download: {hours: 2}"),
                                   DEPLOY, BOOT), "kvm", "timeouts.actions.http-download: 7200 s exceeds"),
    ("bad-short-duration", job(HEAD, DEPLOY.replace("to: tmpfs", "to: tmpfs\n      timeout: 2x"), BOOT), "kvm",
     "actions[0].deploy.timeout: '2x' is not a duration"),
    ("bad-duration-unit", job(HEAD.replace("job: {minutes: 10}", "job: {weeks: 1}"), DEPLOY, BOOT), "kvm",
     "timeouts.job: unknown unit 'weeks'"),
    ("missing-job-timeout", job("job_name: t\ndevice_type: kvm\ntimeouts: {action: {minutes: 1}}\n", DEPLOY, BOOT),
     "kvm", "timeouts.job: required"),
    ("missing-job-name", job(HEAD.replace("job_name: t\n", ""), DEPLOY, BOOT), "kvm", "job_name: required"),
    ("missing-device-type", job(HEAD.replace("device_type: kvm\n", ""), DEPLOY, BOOT), "kvm",
     "device_type: required"),
    ("priority-out-of-range", job(HEAD + "priority: 150\n", DEPLOY, BOOT), "kvm", "priority"),
    ("priority-unknown-word", job(HEAD + "priority: urgent\n", DEPLOY, BOOT), "kvm",
     "priority: 'urgent' is not high, medium, low or a number"),
    ("unknown-top-level-key", job(HEAD + "jobname: x\n", DEPLOY, BOOT), "kvm", "jobname: unknown key"),
    ("unknown-deploy-key", job(HEAD, DEPLOY.replace("os: debian", "os: debian\n      kernel: http://e.com/k"), BOOT),
     "kvm", "actions[0].deploy.kernel: unknown key"),
    ("two-keys-in-one-action", job(HEAD, "  - deploy: {to: tmpfs, image: 'http://e.com/a', os: debian}\n"
                                         "    boot: {method: qemu}\n"), "kvm",
     "actions[0]: each action is a mapping with exactly one of"),
    ("unknown-action-type", job(HEAD, DEPLOY, "  - flash:\n      image: x\n"), "kvm",
     "actions[1]: 'flash' is not one of deploy, boot, test, command, repeat, submit"),
    ("empty-actions", HEAD + "actions: []\n", "kvm", "actions: must have at least 1 item"),
    ("submit-not-a-mapping", job(HEAD, DEPLOY, BOOT, "  - submit: 5\n"), "kvm",
     "actions[2].submit: expected a mapping, got int 5"),
    ("url-with-reset", job(HEAD, DEPLOY.replace("http://example.com/disk.img.gz",
                                                "'http://e.com/disk.img.gz;reset'"), BOOT), "kvm",
     "actions[0].deploy.image: 'http://e.com/disk.img.gz;reset': character ';' is not allowed"),
    ("url-ftp-scheme", job(HEAD, DEPLOY.replace("http://example.com/disk.img.gz", "ftp://e.com/disk.img.gz"), BOOT),
     "kvm", "actions[0].deploy.image: 'ftp://e.com/disk.img.gz': only http://, https:// and file://"),
    ("file-url-with-dotdot", job(HEAD, DEPLOY.replace("http://example.com/disk.img.gz",
                                                      "file:///srv/images/../../etc/shadow.gz"), BOOT), "kvm",
     "actions[0].deploy.image"),
    ("md5sum-malformed", job(HEAD, DEPLOY.replace("os: debian", "os: debian\n      md5sum: xyz"), BOOT), "kvm",
     "actions[0].deploy.md5sum"),
    ("failure-retry-zero", job(HEAD, DEPLOY, BOOT.replace("media: tmpfs", "media: tmpfs\n      failure_retry: 0")),
     "kvm", "actions[1].boot.failure_retry"),
    ("test-without-boot", job(HEAD, DEPLOY, TEST), "kvm",
     "actions[1].test: a test action never boots the board"),
    ("role-in-singlenode-job", job(HEAD, DEPLOY, BOOT.replace("media: tmpfs", "media: tmpfs\n      role: [server]")),
     "kvm", "actions[1].boot.role: role is only used in a multinode job"),
    ("device-type-mismatch", job(HEAD.replace("device_type: kvm", "device_type: panda"), DEPLOY, BOOT), "kvm",
     "device_type: the job asks for 'panda' but the device is a 'kvm'"),
    ("deploy-method-not-offered", job(HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n", BOOT),
     "kvm", "actions[0].deploy: no strategy accepts this deploy on device type 'kvm'"),
    ("uboot-command-set-not-offered",
     job(TFTP_HEAD.replace("beaglebone-black", "panda"), "  - boot:\n      method: u-boot\n      commands: nfs\n"
                                                         "      type: bootm\n"), "panda",
     "the job asks for u-boot commands 'nfs' but device type 'panda' offers ramdisk"),
    ("uboot-type-not-offered",
     job(TFTP_HEAD.replace("beaglebone-black", "panda"), "  - boot:\n      method: u-boot\n      commands: ramdisk\n"
                                                         "      type: bootz\n"), "panda",
     "the job asks for boot type 'bootz' but device type 'panda' supports bootm"),
    ("multinode-with-top-device-type", job(MULTINODE_HEAD + "device_type: kvm\n",
                                           DEPLOY.replace("to: tmpfs", "to: tmpfs\n      role: [server, client]")),
     "kvm", "device_type: a multinode job gives the device type of each role"),
    ("multinode-undeclared-role", job(MULTINODE_HEAD, DEPLOY.replace("to: tmpfs", "to: tmpfs\n      role: [server, db]")),
     "kvm", "actions[0].deploy.role: 'db' is not a role of this job"),
    ("multinode-action-without-role", job(MULTINODE_HEAD, DEPLOY), "kvm",
     "actions[0].deploy.role: every action of a multinode job names its role"),
    ("lava-start-same-role", job(MULTINODE_HEAD, DEPLOY.replace(
        "to: tmpfs", "to: tmpfs\n      role: [server]\n      protocols:\n        lava-multinode:\n"
                     "          request: lava-start\n          expect_role: server")), "kvm",
     "actions[0].deploy.protocols.lava-multinode: role and expect_role are both 'server'"),
    ("lava-start-every-role", job(MULTINODE_HEAD, DEPLOY.replace(
        "to: tmpfs", "to: tmpfs\n      role: [server]\n      protocols:\n        lava-multinode:\n"
                     "          request: lava-start\n          expect_role: client"), DEPLOY.replace(
        "to: tmpfs", "to: tmpfs\n      role: [client]\n      protocols:\n        lava-multinode:\n"
                     "          request: lava-start\n          expect_role: server")), "kvm",
     "lava-start is specified on every role"),
    ("lava-start-without-role", job(MULTINODE_HEAD, DEPLOY.replace(
        "to: tmpfs", "to: tmpfs\n      protocols:\n        lava-multinode:\n"
                     "          request: lava-start\n          expect_role: server")), "kvm",
     "actions[0].deploy.protocols.lava-multinode: lava-start on an action without a role is an error"),
    ("protocol-call-without-message-id", job(MULTINODE_HEAD, DEPLOY.replace(
        "to: tmpfs", "to: tmpfs\n      role: [server, client]\n      protocols:\n        lava-multinode:\n"
                     "          action: http-download\n          request: lava-sync")), "kvm",
     "actions[0].deploy.protocols.lava-multinode: lava-sync needs messageID"),
    ("not-a-mapping", "- just\n- a list\n", "kvm", "the job must be a YAML mapping"),
    ("yaml-syntax-error", HEAD + "actions:\n  - deploy: {to: tmpfs\n", "kvm", "job YAML line"),
    ("python-tag", HEAD + "actions: !!python/object/apply:os.system ['touch /tmp/lava-dispatch-pwned']\n", "kvm",
     "tag not allowed"),
]


@pytest.mark.parametrize("name,text,device_type,expected", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_job_is_rejected_with_its_place(tmp_path, name, text, device_type, expected):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = run_cli("validate", str(path), "--device", str(device_path(device_type)))
    assert result.code == 1, result.err
    assert expected in result.err, result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_at_least_forty_different_mistakes():
    assert len({case[0] for case in INVALID}) >= 40
    assert len({case[1] for case in INVALID}) == len(INVALID)


def test_python_tag_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(HEAD + f"actions: !!python/object/apply:os.system ['touch {marker}']\n")
    run_cli("validate", str(path))
    assert not marker.exists()


def test_every_problem_is_reported_one_per_line(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(job(HEAD + "jobname: x\n", "  - deploy:\n      to: tmpfs\n", "  - boot:\n      method: ubot\n",
                        TEST.replace("          from: git\n", "")))
    result = run_cli("validate", str(path))
    lines = [line.strip() for line in result.err.splitlines()[1:]]
    assert result.code == 1
    assert any(line.startswith("jobname:") for line in lines)
    assert any(line.startswith("actions[0].deploy: tmpfs needs exactly one of image") for line in lines)
    assert any(line.startswith("actions[1].boot.method:") for line in lines)
    assert any(line.startswith("actions[2].test.definitions[0].from:") for line in lines)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("job_name: t\ntimeouts:\n  job: {minutes: 1\nactions: []\n")
    result = run_cli("validate", str(path))
    assert result.code == 1
    assert "line 4" in result.err or "line 3" in result.err, result.err


def test_missing_job_file_is_a_usage_error(tmp_path):
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert "does not exist" in result.err


def sample_jobs():
    return sorted(SAMPLES.glob("*.yaml"))


def device_types_of(path):
    data = yaml.safe_load(path.read_text())
    if data.get("device_type"):
        return [data["device_type"]]
    return sorted({role["device_type"] for role in data["protocols"]["lava-multinode"]["roles"].values()})


@pytest.mark.parametrize("path", sample_jobs(), ids=lambda p: p.name)
def test_sample_job_validates_on_its_device(path):
    for device_type in device_types_of(path):
        result = run_cli("validate", str(path), "--device", str(device_path(device_type)))
        assert result.code == 0, result.err
        description = yaml.safe_load(result.out)
        assert description["pipeline"], result.out
        for entry in description["pipeline"]:
            assert {"level", "name", "description", "summary", "timeout"} <= set(entry)


def test_every_sample_device_loads():
    from pipeline.device import load_device

    for path in DEVICES.glob("*.yaml"):
        assert load_device(path).device_type


def test_schema_is_json_schema_of_the_job():
    import json

    result = run_cli("schema")
    schema = json.loads(result.out)
    assert result.code == 0
    assert {"job_name", "timeouts", "actions"} <= set(schema["properties"])
    assert "job_name" in schema["required"]


def test_every_sample_job_matches_the_exported_schema():
    """An editor using `lava-dispatch schema` must accept what the dispatcher accepts (and flag a typo)."""
    import json

    import jsonschema
    schema = json.loads(run_cli("schema").out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    jobs = sorted(SAMPLES.glob("*.yaml"))
    assert jobs
    for path in jobs:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(
            yaml.safe_load(path.read_text()))]
        assert errors == [], path.name
    typo = yaml.safe_load((SAMPLES / jobs[0].name).read_text())
    typo["timeouts"]["job"] = {"minutse": 5}
    assert list(validator.iter_errors(typo))
