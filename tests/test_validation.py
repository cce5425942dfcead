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
     "actions[0].deploy.to: 'ramfs' is not one of tmpfs, tftp, usb, sata"),
    ("tmpfs-without-image", job(HEAD, "  - deploy:\n      to: tmpfs\n      os: debian\n", BOOT), "kvm",
     "actions[0].deploy: tmpfs needs exactly one of image"),
    ("tmpfs-without-os", job(HEAD, "  - deploy:\n      to: tmpfs\n      image: http://e.com/a.img\n", BOOT), "kvm",
     "actions[0].deploy.os: required"),
    ("tmpfs-unknown-os", job(HEAD, DEPLOY.replace("os: debian", "os: windows"), BOOT), "kvm",
     "actions[0].deploy.os"),
    ("unknown-compression", job(HEAD, DEPLOY.replace("compression: gz", "compression: zip"), BOOT), "kvm",
     "actions[0].deploy.compression"),
    ("compressed-image-without-compression", job(HEAD, DEPLOY.replace("      compression: gz\n", ""), BOOT, TEST),
     "kvm", "actions[0].deploy.compression: the image looks compressed"),
    ("nfsrootfs-not-a-tarball", job(TFTP_HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n"
                                    "      nfsrootfs: http://e.com/rootfs.img\n      os: debian\n"),
     "beaglebone-black", "actions[0].deploy.nfsrootfs: 'http://e.com/rootfs.img' must be a gz or bz2 tarball"),
    ("nfsrootfs-xz", job(TFTP_HEAD, "  - deploy:\n      to: tftp\n      kernel: http://e.com/zImage\n"
                         "      nfsrootfs: {url: 'http://e.com/rootfs.tar.xz', compression: xz}\n      os: debian\n"),
     "beaglebone-black", "actions[0].deploy.nfsrootfs.compression: the NFS root must be a gz or bz2 tarball"),
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
     "actions[1].boot.method: 'ubot' is not one of qemu, u-boot, minimal"),
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
    ("named-timeout-unknown-action", job(HEAD.replace("job: {minutes: 10}",
                                                      "job: {minutes: 10}\n  actions:\n    http-downlaod: {minutes: 2}"),
                                         DEPLOY, BOOT), "kvm", "timeouts.actions.http-downlaod: no action is named"),
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
     "actions[1]: 'flash' is not one of deploy, boot, test, repeat, submit"),
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
    assert any(line.startswith("actions[0].deploy.os:") for line in lines)
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


# ---------------------------------------------------------------- hostile input: bounds and gaps
# Each gap below was once accepted (or crashed); several inputs each. The
# check is again what `lava-dispatch validate` prints: exit 1, the place.

INLINE = """
  - test:
      definitions:
        - from: inline
          name: smoke
          path: inline/smoke.yaml
          repository:
            metadata: {name: smoke}
            run: {steps: ['lava-test-case a --shell true']}
"""
LOCAL_HEAD = HEAD.replace("device_type: kvm", "device_type: local-shell")
MINIMAL = "  - boot:\n      method: minimal\n"


def inline(**changes: tuple[str, str]) -> str:
    """A local-shell job with one inline definition; each change is an (old, new) replacement in its text."""
    text = job(LOCAL_HEAD, MINIMAL, INLINE)
    for old, new in changes.values():
        assert old in text, old
        text = text.replace(old, new)
    return text


def deploy_with(keys: str) -> str:
    return DEPLOY.replace("os: debian", "os: debian\n      " + keys)


def boot_with(keys: str) -> str:
    return BOOT.replace("media: tmpfs", "media: tmpfs\n      " + keys)


RUN = "run: {steps: ['lava-test-case a --shell true']}"
PATH_LINE = "path: inline/smoke.yaml"
LAUGHS = "metadata:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
GAPS = [
    # (gap, id, job text, device type, text that must appear in the error)
    ("duplicate-key", "top", HEAD + "job_name: again\n" + "actions:\n" + DEPLOY + BOOT, "kvm",
     "(job): duplicate key 'job_name' (line 6; first on line 2)"),
    ("duplicate-key", "deploy", job(HEAD, deploy_with("to: tftp"), BOOT), "kvm",
     "actions[0].deploy: duplicate key 'to' (line 13; first on line 9)"),
    ("duplicate-key", "flow", job(HEAD, "  - boot: {method: qemu, method: minimal}\n"), "kvm",
     "actions[0].boot: duplicate key 'method'"),
    ("duplicate-key", "inline-run", inline(a=(RUN, RUN + "\n            " + RUN)), "local-shell",
     "actions[1].test.definitions[0].repository: duplicate key 'run'"),
    ("billion-laughs", "definition-parameters",
     inline(a=("name: smoke\n", "name: smoke\n          parameters: {X: *l8}\n"),
            b=("actions:\n", LAUGHS + "actions:\n")),
     "local-shell", "aliases expand to more than 10000 nodes"),
    ("billion-laughs", "long-string", HEAD + "metadata:\n  s: &s '" + "x" * 600_000 + "'\n  t: [*s, *s]\n"
     + "actions:\n" + DEPLOY, "kvm", "metadata.t[1]: aliases expand to more than"),
    ("billion-laughs", "merge-keys", HEAD + "metadata:\n  a: &a {" + ", ".join(f"k{i}: {i}" for i in range(6000))
     + "}\n  b: {<<: *a}\n  c: {<<: *a}\n" + "actions:\n" + DEPLOY, "kvm", "aliases expand to more than"),
    ("recursive-alias", "list", HEAD + "metadata: &m {self: [*m]}\nactions:\n" + DEPLOY, "kvm",
     "metadata.self[0]: alias *m is inside the collection it names"),
    ("recursive-alias", "actions", job(HEAD, "  - &a {boot: {method: qemu, x: *a}}\n"), "kvm",
     "actions[0].boot.x: alias *a is inside the collection it names"),
    ("nesting-depth", "flow", HEAD + "metadata: " + "[" * 150 + "]" * 150 + "\nactions:\n" + DEPLOY, "kvm",
     "nested deeper than 100 levels"),
    ("nesting-depth", "crashing-depth", HEAD + "metadata: " + "[" * 200_000 + "\n", "kvm",
     "nested deeper than 100 levels"),
    ("nesting-depth", "block", HEAD + "metadata:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 120))
     + "  " * 120 + "v: 1\nactions:\n" + DEPLOY, "kvm", "nested deeper than 100 levels"),
    ("unreadable-scalar", "timestamp", HEAD.replace("job: {minutes: 10}", "job: {minutes: 10}\n  test: 2020-13-45")
     + "actions:\n" + DEPLOY, "kvm", "timeouts.test: cannot read '2020-13-45' as timestamp"),
    ("unreadable-scalar", "int-tag", job(HEAD, deploy_with("failure_retry: !!int x")),
     "kvm", "actions[0].deploy.failure_retry: cannot read 'x' as int"),
    ("unreadable-scalar", "hex-digits", job(HEAD, deploy_with("repeat: 0x"
                                                                 + "f" * 5000)), "kvm",
     "actions[0].deploy.repeat: cannot read '0xfff"),
    ("huge-duration", "minutes", HEAD.replace("{minutes: 10}", "{minutes: " + "9" * 400 + "}") + "actions:\n" + DEPLOY,
     "kvm", "timeouts.job: minutes: a very large number is more than 365 days"),
    ("huge-duration", "short-form", job(HEAD, deploy_with("timeout: 99999999999999999999s")),
     "kvm", "actions[0].deploy.timeout: 1e+20 s is more than 365 days"),
    ("huge-duration", "float", job(HEAD.replace("{minutes: 10}", "{seconds: 1.0e+308}"), DEPLOY), "kvm",
     "timeouts.job: seconds: 1e+308 is more than 365 days"),
    ("huge-duration", "sum", job(HEAD.replace("{minutes: 10}", "{days: 300, hours: 2000}"), DEPLOY), "kvm",
     "timeouts.job: 3.312e+07 s is more than 365 days"),
    ("non-finite-duration", "nan",
     job(HEAD.replace("{minutes: 10}", "{minutes: 10}\n  action: {seconds: .nan}"), DEPLOY), "kvm",
     "timeouts.action: seconds: nan is not a non-negative number"),
    ("non-finite-duration", "inf", job(HEAD.replace("{minutes: 10}", "{minutes: .inf}"), DEPLOY), "kvm",
     "timeouts.job: minutes: inf is more than 365 days"),
    ("non-finite-duration", "minus-inf", job(HEAD, deploy_with("timeout: {seconds: -.inf}")),
     "kvm", "actions[0].deploy.timeout: seconds: -inf is not a non-negative number"),
    ("shell-name-parameter", "job-parameters",
     inline(a=("name: smoke\n", "name: smoke\n          parameters: {MY-VAR: 1}\n")), "local-shell",
     "actions[1].test.definitions[0].parameters.MY-VAR: invalid key: 'MY-VAR' is not a shell variable name"),
    ("shell-name-parameter", "job-params", inline(a=("name: smoke\n", "name: smoke\n          params: {1ABC: x}\n")),
     "local-shell", "actions[1].test.definitions[0].params.1ABC: invalid key: '1ABC' is not a shell variable name"),
    ("shell-name-parameter", "definition-params", inline(a=(RUN, RUN + "\n            params: {'A B': x}")),
     "local-shell", "actions[1].test.definitions[0].repository.params.'A B': 'A B' is not a shell variable name"),
    ("shell-name-parameter", "definition-parameters", inline(a=(RUN, RUN + "\n            parameters: {a.b: x}")),
     "local-shell", "actions[1].test.definitions[0].repository.parameters.a.b: 'a.b' is not a shell variable name"),
    ("testdef-shape", "run-steps-mapping", inline(a=(RUN, "run: {steps: {a: ls}}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps: a list of shell commands is required, got a mapping"),
    ("testdef-shape", "run-step-list", inline(a=(RUN, "run: {steps: [[ls]]}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps[0]: expected a shell command (a string), got a list"),
    ("testdef-shape", "no-run", inline(a=(RUN, "install: {steps: [ls]}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps: a list of shell commands is required"),
    ("testdef-shape", "install-list", inline(a=(RUN, RUN + "\n            install: [ls]")), "local-shell",
     "actions[1].test.definitions[0].repository.install: expected a mapping with steps and/or deps, got a list"),
    ("testdef-shape", "install-steps-string", inline(a=(RUN, RUN + "\n            install: {steps: ls}")),
     "local-shell", "actions[1].test.definitions[0].repository.install.steps: a list of shell commands is required"),
    ("testdef-shape", "parse-string", inline(a=(RUN, RUN + "\n            parse: '(?P<result>.*)'")), "local-shell",
     "actions[1].test.definitions[0].repository.parse: expected a mapping with pattern and fixupdict"),
    ("testdef-shape", "parse-bad-regex", inline(a=(RUN, RUN + "\n            parse: {pattern: '(?P<result>'}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.pattern: '(?P<result>' is not a valid regular"),
    ("testdef-shape", "parse-missing-groups", inline(a=(RUN, RUN + "\n            parse: {pattern: '(?P<result>x)'}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.pattern: needs the named groups test_case_id"),
    ("testdef-shape", "fixupdict-list", inline(a=(RUN, RUN + "\n            parse: {fixupdict: [PASS]}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.fixupdict: expected a mapping"),
    ("testdef-shape", "fixupdict-value", inline(a=(RUN, RUN + "\n            parse: {fixupdict: {PASS: [pass]}}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.fixupdict.PASS: expected a result"),
    ("testdef-shape", "metadata-name-list", inline(a=("metadata: {name: smoke}", "metadata: {name: [a]}")),
     "local-shell", "actions[1].test.definitions[0].repository.metadata.name: expected a name"),
    ("install-deps-type", "number", inline(a=(RUN, RUN + "\n            install: {deps: [curl, 7]}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[1]: expected a package name (a string), got 7"),
    ("install-deps-type", "mapping", inline(a=(RUN, RUN + "\n            install: {deps: [{a: b}]}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[0]: expected a package name (a string), got a mapping"),
    ("install-deps-type", "string", inline(a=(RUN, RUN + "\n            install: {deps: curl}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps: expected a list of package names"),
    ("install-deps-type", "null-entry", inline(a=(RUN, RUN + "\n            install: {deps: [curl, ~]}")),
     "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[1]: expected a package name (a string), got None"),
    ("definition-path", "empty", inline(a=(PATH_LINE, "path: ''")), "local-shell",
     "actions[1].test.definitions[0].path: '' does not name a file"),
    ("definition-path", "dot", inline(a=(PATH_LINE, "path: ./")), "local-shell",
     "actions[1].test.definitions[0].path: './' does not name a file"),
    ("definition-path", "nul", inline(a=(PATH_LINE, 'path: "a\\0b.yaml"')), "local-shell",
     "actions[1].test.definitions[0].path: 'a\\x00b.yaml': a path cannot hold a NUL character"),
    ("definition-path", "absolute", inline(a=(PATH_LINE, "path: /etc/passwd")), "local-shell",
     "actions[1].test.definitions[0].path: '/etc/passwd' must be a relative path"),
    ("definition-path", "dotdot-inside", inline(a=(PATH_LINE, "path: a/../../b.yaml")), "local-shell",
     "actions[1].test.definitions[0].path: 'a/../../b.yaml' must be a relative path"),
    ("definition-path", "too-long", inline(a=(PATH_LINE, "path: " + "a/" * 2100 + "x.yaml")), "local-shell",
     "actions[1].test.definitions[0].path: the path is 4206 bytes long, more than 4096"),
    ("definition-path", "long-component", inline(a=(PATH_LINE, "path: d/" + "x" * 256)), "local-shell",
     "actions[1].test.definitions[0].path: a component of the path is longer than 255 bytes"),
    ("prompt-regex", "job-prompt", job(HEAD, DEPLOY, boot_with("prompts: ['ok', '(']")),
     "kvm", "actions[1].boot.prompts[1]: '(' is not a valid regular expression: missing )"),
    ("prompt-regex", "job-prompt-string", job(HEAD, DEPLOY, boot_with("prompts: '[a-'")),
     "kvm", "actions[1].boot.prompts[0]: '[a-' is not a valid regular expression"),
    ("prompt-regex", "login-prompt", job(HEAD, DEPLOY, boot_with(
        "auto_login: {login_prompt: '*login:', username: root}")), "kvm",
     "actions[1].boot.auto_login.login_prompt: '*login:' is not a valid regular expression: nothing to repeat"),
    ("prompt-regex", "password-prompt-nesting", job(HEAD, DEPLOY, boot_with(
        "auto_login: {login_prompt: 'login:', username: root, password_prompt: '"
        + "(" * 1200 + ")" * 1200 + "'}")), "kvm",
     "actions[1].boot.auto_login.password_prompt: '((((("),
    ("prompt-regex", "repeat-too-large", job(HEAD, DEPLOY, boot_with("prompts: 'a{99999999999}'")),
     "kvm", "actions[1].boot.prompts[0]: 'a{99999999999}' is not a usable regular expression"),
    ("whole-number", "bool", job(HEAD, DEPLOY, boot_with("failure_retry: true")),
     "kvm", "actions[1].boot.failure_retry: expected a whole number, got true"),
    ("whole-number", "float", job(HEAD, DEPLOY, boot_with("failure_retry: 2.0")),
     "kvm", "actions[1].boot.failure_retry: expected a whole number, got float 2.0"),
    ("whole-number", "nan", job(HEAD + "priority: .nan\n", DEPLOY), "kvm",
     "priority: expected a whole number, got float nan"),
    ("whole-number", "root-partition", job(HEAD, deploy_with("root_partition: 99999")),
     "kvm", "actions[0].deploy.root_partition: must be <= 128, got 99999"),
    ("whole-number", "repeat-count-bool", job(HEAD, DEPLOY, "  - repeat:\n      count: true\n      actions:\n"
                                              + textwrap.indent(BOOT, "    ")), "kvm",
     "actions[1].repeat.count: a whole number from 1 to 1000 is required"),
    ("whole-number", "role-count", job(MULTINODE_HEAD.replace("count: 1}", "count: 1e3}", 1),
                                       DEPLOY.replace("to: tmpfs", "to: tmpfs\n      role: [server, client]")), "kvm",
     "protocols.lava-multinode.roles.server.count: expected a whole number, got str '1e3'"),
    ("odd-values", "deploy-to-list", job(HEAD, "  - deploy: {to: [tmpfs], os: debian}\n"), "kvm",
     "actions[0].deploy.to: a list is not one of tmpfs, tftp, usb, sata"),
    ("odd-values", "boot-method-mapping", job(HEAD, DEPLOY, "  - boot: {method: {qemu: 1}}\n"), "kvm",
     "actions[1].boot.method: a mapping is not one of qemu, u-boot, minimal"),
    ("odd-values", "repeat-mixed-keys", job(HEAD, DEPLOY, "  - repeat: {count: 2, actions: [], 7: x, y: z}\n"), "kvm",
     "actions[1].repeat.7: unknown key"),
    ("odd-values", "key-with-newline", HEAD + '"bad\\nkey": 1\nactions:\n' + DEPLOY, "kvm", "'bad\\nkey': unknown key"),
]


@pytest.mark.parametrize("gap,name,text,device_type,expected", GAPS, ids=[f"{g[0]}:{g[1]}" for g in GAPS])
def test_hostile_job_is_rejected_at_validate_time(tmp_path, gap, name, text, device_type, expected):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    for argv in (["validate", str(path)], ["validate", str(path), "--device", str(device_path(device_type))]):
        result = run_cli(*argv)
        assert result.code == 1, result.err
        assert expected in result.err, result.err
        assert "Traceback" not in result.err and result.out == ""
        assert all("\n" not in line and ": " in line for line in result.err.splitlines()[1:])


def test_every_gap_has_several_inputs():
    gaps = [case[0] for case in GAPS]
    assert all(gaps.count(gap) >= 2 for gap in gaps), {gap: gaps.count(gap) for gap in gaps}
    assert len({case[2] for case in GAPS}) == len(GAPS)


KVM_DEVICE = (DEVICES / "kvm01.yaml").read_text()
BBB_DEVICE = (DEVICES / "bbb01.yaml").read_text()
QEMU_PARAMETERS = "        parameters:\n          command: qemu-system-x86_64\n"
DEVICE_GAPS = [
    # (gap, id, device text, text that must appear in the error); the job is the sample kvm.yaml or uboot-nfs.yaml
    ("method-shape", "parameters-string", KVM_DEVICE.replace(QEMU_PARAMETERS, "        parameters: qemu-system-x86_64\n"
                                                             "        unused:\n          command: x\n"),
     "kvm01.yaml: actions.boot.methods.qemu.parameters: expected a mapping, got 'qemu-system-x86_64'"),
    ("method-shape", "method-string", KVM_DEVICE.replace("      tmpfs: {}", "      tmpfs: yes-please"),
     "kvm01.yaml: actions.deploy.methods.tmpfs: expected a mapping (parameters, command sets), got 'yes-please'"),
    ("method-shape", "parameters-list", KVM_DEVICE.replace("      tmpfs: {}", "      tmpfs: {parameters: [a]}"),
     "kvm01.yaml: actions.deploy.methods.tmpfs.parameters: expected a mapping, got a list"),
    ("uboot-commands", "string", BBB_DEVICE.replace("        usb:\n          commands:\n            - usb start\n",
                                                    "        usb:\n          commands: usb start\n          x:\n"
                                                    "            - usb start\n"),
     "bbb01.yaml: actions.boot.methods.u-boot.usb.commands: expected a list of commands (strings)"),
    ("uboot-commands", "mapping-entry", BBB_DEVICE.replace("            - usb start\n", "            - {usb: start}\n"),
     "bbb01.yaml: actions.boot.methods.u-boot.usb.commands: expected a list of commands (strings)"),
    ("load-addresses", "string",
     BBB_DEVICE.replace("  bootm:\n    kernel: '0x80200000'\n",
                        "  bootm: '0x80200000'\n  x:\n    kernel: '0x80200000'\n"),
     "bbb01.yaml: parameters.bootm: expected a mapping of load addresses"),
    ("load-addresses", "list", BBB_DEVICE.replace("  bootz:\n", "  bootz: [1]\n  x:\n"),
     "bbb01.yaml: parameters.bootz: expected a mapping of load addresses"),
    ("device-prompts", "bad-regex", KVM_DEVICE.replace("    - 'root@lava-board:~# '", "    - 'root@(lava-board:~# '"),
     "kvm01.yaml: constants.shell-prompts[0]: 'root@(lava-board:~# ' is not a valid regular expression"),
    ("device-prompts", "string", KVM_DEVICE.replace("  shell-prompts:\n    - 'root@lava-board:~# '",
                                                    "  shell-prompts: 'root@lava-board:~# '"),
     "kvm01.yaml: constants.shell-prompts: expected a list of strings, got 'root@lava-board:~# '"),
    ("device-prompts", "failure-messages", KVM_DEVICE.replace("constants:\n", "constants:\n  failure-messages: 5\n"),
     "kvm01.yaml: constants.failure-messages: expected a list of strings, got 5"),
    ("device-yaml", "duplicate-key", KVM_DEVICE.replace("hostname: kvm01\n", "hostname: kvm01\nhostname: kvm02\n"),
     "kvm01.yaml: (device): duplicate key 'hostname' (line 6; first on line 5)"),
    ("device-yaml", "nan-timeout", KVM_DEVICE.replace("seconds: 30", "seconds: .nan"),
     "kvm01.yaml: timeouts.actions.execute-qemu: seconds: nan is not a non-negative number"),
    ("device-yaml", "environment-name", KVM_DEVICE + "environment: {MY-VAR: x}\n",
     "kvm01.yaml: environment.MY-VAR: 'MY-VAR' is not a shell variable name"),
]


@pytest.mark.parametrize("gap,name,text,expected", DEVICE_GAPS, ids=[f"{g[0]}:{g[1]}" for g in DEVICE_GAPS])
def test_malformed_device_is_rejected_with_its_place(tmp_path, gap, name, text, expected):
    """The device file is the lab's (trusted), but a mistake in it is a problem, not a traceback later."""
    sample = "kvm.yaml" if "kvm01" in expected else "uboot-nfs.yaml"
    device = tmp_path / expected.split(":")[0]
    device.write_text(text)
    result = run_cli("validate", str(SAMPLES / sample), "--device", str(device))
    assert result.code == 1, result.err
    assert expected in result.err, result.err
    assert "Traceback" not in result.err and result.out == ""
