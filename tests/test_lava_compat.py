"""LAVA's job forms, one rule at a time: what loads, what each form builds, what stays refused.

The jobs here are written for these tests in the forms LAVA 2026.07 accepts
(its schemas in lava_common/schemas); the devices are the project's samples.
The comparison with LAVA's own fixtures is tests/test_lava_fixtures.py.
"""

from __future__ import annotations

import pytest
from conftest import DEVICES, SAMPLES, run_cli

from pipeline.builder import build_pipeline, unknown_timeout_names
from pipeline.device import load_device, parse_device
from pipeline.errors import ProblemList
from pipeline.parser import parse_job

HEAD = """
job_name: lava-form
device_type: {device_type}
visibility: public
priority: medium
timeouts:
  job: {{minutes: 30}}
  queue: {{hours: 2}}
  action: {{minutes: 2}}
actions:
"""
TFTP = """
  - deploy:
      to: tftp
      kernel: {url: 'http://e.com/zImage', type: zimage}
      ramdisk: {url: 'http://e.com/initrd.cpio.gz', compression: gz}
      modules: {url: 'http://e.com/modules.tar.xz', compression: xz}
      dtb: {url: 'http://e.com/am335x-boneblack.dtb'}
      os: oe
"""
UBOOT = """
  - boot:
      method: u-boot
      commands: ramdisk
      soft_reboot: [reboot]
      parameters: {shutdown-message: 'reboot: Restarting system'}
      prompts: ['/ #']
      timeout: {minutes: 4}
"""
TEST = """
  - test:
      timeout: {minutes: 5, skip: true}
      definitions:
        - repository: {metadata: {format: Lava-Test Test Definition 1.0, name: smoke},
                       run: {steps: ['echo ok']}}
          from: inline
          path: inline/smoke.yaml
          name: smoke
          skip_install: [deps]
          expected: [smoke-case]
"""


def job(device_type: str, *blocks: str) -> str:
    return HEAD.format(device_type=device_type) + "".join(blocks)


def built(text: str, device: str = "bbb01.yaml"):
    return build_pipeline(parse_job(text), load_device(DEVICES / device)).pipeline


def names(pipeline) -> list[str]:
    return [action.name for action in pipeline.walk()] if hasattr(pipeline, "walk") else []


def walk(pipeline) -> list:
    return [each for action in pipeline.actions for each in action.walk()]


def test_lava_keys_load_and_the_queue_timeout_is_a_parsed_duration():
    parsed = parse_job(job("beaglebone-black", TFTP, UBOOT, TEST))
    assert parsed.header.timeouts.queue == parsed.timeouts.queue == 7200.0
    boot = parsed.flat_actions()[1].params
    assert boot.type is None and boot.soft_reboot == ["reboot"]
    assert parsed.flat_actions()[2].definitions[0].skip_install == ["deps"]


def test_the_uboot_boot_command_comes_from_the_deploys_kernel_type():
    pipeline = built(job("beaglebone-black", TFTP, UBOOT, TEST))
    boot = next(a for a in walk(pipeline) if a.name == "bootloader-overlay")
    assert boot.params.type == "bootz"  # kernel.type zimage
    uimage = job("beaglebone-black", TFTP.replace("type: zimage", "type: uimage"), UBOOT)
    assert next(a for a in walk(built(uimage)) if a.name == "bootloader-overlay").params.type == "bootm"


def test_a_kernel_type_the_device_cannot_boot_is_refused_at_validate_time():
    text = job("beaglebone-black", TFTP.replace("type: zimage", "type: image"), UBOOT)
    with pytest.raises(ProblemList) as raised:
        built(text)
    assert "needs booti but device type 'beaglebone-black' supports" in raised.value.problems[0]


def test_inline_uboot_commands_are_accepted():
    inline = UBOOT.replace("commands: ramdisk", "commands: ['setenv bootargs console=ttyO0', '{BOOTX}']")
    pipeline = built(job("beaglebone-black", TFTP, inline))
    assert next(a for a in walk(pipeline) if a.name == "bootloader-overlay").params.commands[-1] == "{BOOTX}"


def test_a_tftp_deploy_needs_a_kernel():
    text = job("beaglebone-black", TFTP.replace("      kernel: {url: 'http://e.com/zImage', type: zimage}\n", ""))
    with pytest.raises(ProblemList) as raised:
        parse_job(text)
    assert "actions[0].deploy.kernel: required but missing (tftp needs a kernel to deploy)" in raised.value.problems


def test_nfsrootfs_prefix_must_stay_inside_the_tarball():
    nfs = TFTP.replace("      os: oe\n", "      os: debian\n      nfsrootfs: {url: 'http://e.com/root.tar.xz', "
                       "compression: xz, prefix: ../etc}\n")
    with pytest.raises(ProblemList) as raised:
        parse_job(job("beaglebone-black", nfs))
    assert any("nfsrootfs.prefix" in line for line in raised.value.problems)
    assert parse_job(job("beaglebone-black", nfs.replace("../etc", "rootfs/"))).flat_actions()


def test_a_named_timeout_for_no_action_is_a_warning_not_a_refusal():
    text = job("kvm", "").replace("  action: {minutes: 2}\n", "  action: {minutes: 2}\n  actions:\n    no-such-action: {minutes: 1}\n")
    text += (SAMPLES / "kvm.yaml").read_text().split("actions:\n", 1)[1]
    parsed = parse_job(text)
    assert unknown_timeout_names(parsed) == [
        "timeouts.actions.no-such-action: no action is named 'no-such-action': this timeout is ignored "
        "(see `lava-dispatch validate` for the names in a pipeline)"]
    build_pipeline(parsed, load_device(DEVICES / "kvm01.yaml"))


def test_the_job_named_timeout_beats_the_blocks_and_a_retry_shares_its_timeout(tmp_path):
    text = (SAMPLES / "kvm.yaml").read_text()
    parsed = parse_job(text.replace("timeouts:\n", "timeouts:\n  actions:\n    execute-qemu: {seconds: 45}\n", 1))
    by_name = {a.name: a for a in walk(build_pipeline(parsed, load_device(DEVICES / "kvm01.yaml")).pipeline)}
    assert by_name["execute-qemu"].timeout == 45  # job named beats the retry's share and the block's timeout
    retry = by_name["boot-image-retry"]
    share = retry.timeout // retry.attempts
    assert retry.attempts == 2 and by_name["expect-shell-connection"].timeout == share


MULTINODE_SUBJOB = """
job_name: client
target: kvm01
timeouts: {job: {minutes: 10}}
visibility: public
protocols:
  lava-multinode:
    target_group: group-1
    role: client
    roles: {kvm01: client, kvm02: server}
    group_size: 2
    sub_id: 1
    request: lava-start
    expect_role: server
actions:
  - deploy:
      to: tmpfs
      role: [client]
      images: {rootfs: {url: 'http://e.com/disk.img', image_arg: '-drive format=raw,file={rootfs}'}}
  - boot: {method: qemu, media: tmpfs, role: [client], prompts: ['# ']}
"""


def test_a_lava_server_sub_job_validates_for_its_own_role(tmp_path):
    parsed = parse_job(MULTINODE_SUBJOB)
    multinode = parsed.multinode
    assert multinode.subjob and multinode.role == "client" and multinode.timeout == 90.0  # LAVA's default
    assert set(multinode.roles) == {"client", "server"} and multinode.devices == {"kvm01": "client",
                                                                                   "kvm02": "server"}
    path = tmp_path / "client.yaml"
    path.write_text(MULTINODE_SUBJOB)
    result = run_cli("validate", str(path), "--device", str(DEVICES / "kvm01.yaml"))
    assert result.code == 0, result.err
    assert "role: client" in result.out
    refused = run_cli("run", str(path), "--device", str(DEVICES / "kvm01.yaml"), "--output-dir", str(tmp_path / "o"))
    assert refused.code == 2 and "sub-job" in refused.err


def test_a_submission_still_needs_each_roles_device_type():
    text = MULTINODE_SUBJOB.replace("    role: client\n", "").replace("roles: {kvm01: client, kvm02: server}",
                                                                    "roles: {client: {count: 1}}")
    with pytest.raises(ProblemList) as raised:
        parse_job(text)
    assert "protocols.lava-multinode.roles.client.device_type: required but missing" in raised.value.problems


def test_every_problem_is_listed_with_the_lava_start_rules():
    text = MULTINODE_SUBJOB.replace("expect_role: server", "expect_role: client").replace(
        "      to: tmpfs\n", "      to: tmpfs\n      compression: zstd\n")
    with pytest.raises(ProblemList) as raised:
        parse_job(text)
    problems = "\n".join(raised.value.problems)
    assert "actions[0].deploy.compression" in problems and "expect_role must not be the role" in problems


def test_a_rendered_device_without_device_type_is_of_the_jobs_type():
    device = parse_device("hostname: x\nactions: {boot: {methods: {qemu: {}}}}\n", "x.yaml", job_device_type="qemu")
    assert device.device_type == "qemu"


@pytest.mark.parametrize(("block", "named"), [
    ("  - deploy: {to: fastboot, images: {boot: {url: 'http://e.com/boot.img'}}}\n", "'fastboot'"),
    ("  - deploy: {to: docker, image: debian}\n", "'docker'"),
    ("  - deploy: {to: lxc, os: debian}\n", "'lxc'"),
    ("  - boot: {method: grub, commands: ramdisk}\n", "'grub'"),
    ("  - boot: {method: uefi-menu, commands: nfs}\n", "'uefi-menu'"),
    ("  - boot: {method: docker, command: bash}\n", "'docker'"),
    ("  - test: {docker: {image: debian}, definitions: [{from: git, repository: 'https://e.com/t.git', "
     "path: t.yaml, name: t}]}\n", "test definitions run in a docker container are not supported"),
    ("  - test: {monitors: [{name: m, start: a, end: b, pattern: c}]}\n", "monitor tests are not supported"),
    ("  - test: {interactive: [{name: i, prompts: ['=>'], script: []}]}\n", "interactive tests are not supported"),
])
def test_methods_this_dispatcher_lacks_are_refused_naming_them(block, named):
    with pytest.raises(ProblemList) as raised:
        parse_job(job("beaglebone-black", block))
    assert any(named in line for line in raised.value.problems), raised.value.problems


EXPECTED_JOB = """
device_type: local-shell
job_name: expected-cases
timeouts: {job: {minutes: 2}, action: {seconds: 30}}
actions:
  - boot: {method: minimal}
  - test:
      definitions:
        - from: inline
          name: listed
          path: inline/listed.yaml
          expected: [reported-case, never-reported]
          repository:
            metadata: {format: Lava-Test Test Definition 1.0, name: listed}
            run: {steps: ['lava-test-case reported-case --result pass']}
"""


def test_expected_cases_that_a_run_does_not_report_fail(tmp_path, no_leftovers):
    from conftest import run_job

    run = run_job(tmp_path, EXPECTED_JOB, "local01")
    assert run.case("reported-case")["result"] == "pass"
    missing = run.case("never-reported")
    assert missing["result"] == "fail" and missing["suite"] == "0_listed", missing


def test_tests_on_a_persistent_nfs_root_get_the_overlay_from_the_booted_board():
    deploy = TFTP.replace("      ramdisk: {url: 'http://e.com/initrd.cpio.gz', compression: gz}\n", "").replace(
        "      os: oe\n", "      os: debian\n      persistent_nfs: {address: '10.0.0.5:/srv/nfs/bbb'}\n")
    names_built = [a.name for a in walk(built(job("beaglebone-black", deploy, UBOOT.replace("ramdisk", "nfs"), TEST)))]
    assert names_built.index("expect-shell-connection") < names_built.index("overlay-unpack") < \
        names_built.index("export-device-env")
    assert "apply-overlay-tftp" not in names_built and "lava-overlay" in names_built


def test_a_rendered_device_takes_the_workers_address_from_the_dispatcher_configuration():
    from pipeline.device import load_device_dictionary
    from pipeline.dispatcher_config import DispatcherConfig

    config = DispatcherConfig.parse("dispatcher_ip: 192.0.2.10\n", "dispatcher.yaml")
    text = "{% set board = 'b1' %}\ndevice_type: probe\nparameters: {}\n"  # as LAVA's templates: no address
    assert load_device_dictionary(text, name="b1", dispatcher=config).parameters["dispatcher_ip"] == "192.0.2.10"
    assert "dispatcher_ip" not in load_device_dictionary(text, name="b1", dispatcher=DispatcherConfig()).parameters
