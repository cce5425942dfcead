"""What a board prints and what a job holds are hostile: long lines, bytes files cannot hold, forged markers.

The end-to-end tests run ``lava-dispatch run`` on the local-shell board (a
real shell, the real overlay and runner) and read the files it writes; the
console scanning and the image_arg checks also have pure unit tests.
"""

from __future__ import annotations

import json
import re
import struct
import textwrap
from xml.etree import ElementTree

import pytest
import yaml
from conftest import DEVICES, run_cli, run_job
from test_local_board import local_job

from pipeline.actions.boot.qemu_args import check_disk, check_image_arg, qemu_opts, substitute
from pipeline.connection import MAX_LINE, ConsoleBuffer, TargetLog
from pipeline.errors import JobError
from pipeline.log import JobLogger, record_line

pytestmark = pytest.mark.usefixtures("no_leftovers")

NONCE_SHAPE = re.compile(r"RUNNER=[0-9a-f]{32}")
FAKE_NONCE = "0123456789abcdef0123456789abcdef"


def target_lines(run) -> list[str]:
    return [r["msg"] for r in run.log if r["lvl"] == "target"]


def warnings(run) -> list[str]:
    return [r["msg"] for r in run.log if r["lvl"] == "warning"]


# ---------------------------------------------------------------- long lines (local-shell board)


def test_a_megabyte_without_newline_is_logged_in_pieces_and_the_next_case_recorded(tmp_path):
    run = run_job(tmp_path, local_job([
        "head -c 1000000 /dev/zero | tr '\\0' a",
        "lava-test-case after-the-line --result pass",
    ]), "local01")
    assert run.code == 0, run.stderr
    assert run.case("after-the-line")["result"] == "pass"
    pieces = [line for line in target_lines(run) if line.startswith("aaaa")]
    assert all(len(line) <= MAX_LINE for line in target_lines(run))
    assert len(pieces) > 1000000 // MAX_LINE
    # Every byte is in output.yaml, and the signal printed after them on the same line is whole.
    assert "".join(pieces) == "a" * 1000000 + "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=after-the-line RESULT=pass>"


def test_a_long_line_then_a_prompt_without_newline_still_matches(tmp_path):
    """Boot: kernel messages, a long line, and the prompt at its end (what expect-shell-connection waits for)."""
    device = yaml.safe_load((DEVICES / "local01.yaml").read_text())
    device["commands"]["connect"] = device["commands"]["connect"].replace(
        "/bin/sh -i", "/bin/sh -c 'echo \"[    1.0] kernel: hi\"; head -c 300000 /dev/zero | tr \"\\0\" k; "
                      "exec /bin/sh -i'")
    device_file = tmp_path / "noisy.yaml"
    device_file.write_text(yaml.safe_dump(device))
    run = run_job(tmp_path, local_job(["lava-test-case ok --result pass"]), device_file)
    assert run.code == 0, run.stderr
    assert run.case("ok")["result"] == "pass"
    lines = target_lines(run)
    assert sum(line.count("k") for line in lines if line.startswith("kkk")) == 300000
    assert "[    1.0] kernel: hi" in lines


# ---------------------------------------------------------------- the console buffer (pure unit tests)


def test_a_prompt_split_over_reads_after_kernel_messages_is_found():
    buffer = ConsoleBuffer()
    prompt = [re.compile(r"root@board:~# ")]
    buffer.begin_search()
    *first, last = ["[    1.2] usb 1-1: new device\r\nroo", "t@bo", "ard:~", "# "]
    for chunk in first:
        buffer.append(chunk)
        assert buffer.search(prompt) is None
    buffer.append(last)
    index, match, before = buffer.search(prompt)
    assert (index, match.group(0)) == (0, "root@board:~# ")
    assert before.startswith("[    1.2] usb 1-1")


def test_the_earliest_match_wins_and_a_failure_pattern_is_seen():
    buffer = ConsoleBuffer()
    buffer.append("x" * (3 * MAX_LINE) + "Kernel panic - not syncing\n=> ")
    buffer.begin_search()
    index, match, _ = buffer.search([re.compile("=> "), re.compile("Kernel panic - not syncing")])
    assert (index, match.start()) == (1, 3 * MAX_LINE)


def test_unmatched_output_is_kept_bounded():
    buffer = ConsoleBuffer()
    buffer.begin_search()
    pattern = [re.compile("never")]
    for _ in range(200):
        buffer.append("y" * 10000)
        assert buffer.search(pattern) is None
        assert len(buffer.text) <= 2 * MAX_LINE + 10000


def test_lines_come_whole_or_in_pieces_that_keep_a_marker_whole():
    buffer = ConsoleBuffer()
    marker = "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>"
    data = "a" * (MAX_LINE - 10) + marker + "\nshort\n" + "\n" * 3 + "b" * (2 * MAX_LINE + 5)
    lines = []
    for start in range(0, len(data), 1000):  # arrives in reads of 1000 characters
        buffer.append(data[start:start + 1000])
        while (line := buffer.line()) is not None:
            lines.append(line)
    assert "".join(lines) + buffer.text[buffer.pos:] == data
    assert all(len(line) <= MAX_LINE for line in lines)
    assert lines[1] == marker + "\n" and lines[2] == "short\n"


def test_the_target_log_splits_long_lines_and_hides_the_nonce():
    emitted: list[str] = []
    log = TargetLog(emitted.append)
    log.secrets.append("f" * 32)
    text = "c" * (3 * MAX_LINE) + "<LAVA_TEST_RUNNER EXIT RUNNER=" + "f" * 32 + ">\r\n" + "f" * 32 + "\n"
    for start in range(0, len(text), 777):
        log.write(text[start:start + 777])
    assert all(len(line) <= MAX_LINE for line in emitted)
    assert sum(line.count("c") for line in emitted[:-1]) == 3 * MAX_LINE
    assert emitted[-2].endswith("<LAVA_TEST_RUNNER EXIT>") and emitted[-1] == "(nonce)"


# ---------------------------------------------------------------- output files stay readable


HOSTILE_STEPS = [
    # DEL, C1 controls as UTF-8, raw bytes that are not UTF-8, NUL, escape sequences, XML and YAML syntax.
    "printf 'del \\177 c1 \\302\\200\\302\\205\\302\\233 raw \\200\\237\\377\\376 nul \\000 esc \\033]0;title\\007'",
    "printf '\\n<tag attr=\"x\"> ]]> &amp; \\047quoted\\047 - {a: b} *alias &anchor\\n'",
    "echo \"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=$(head -c 20000 /dev/zero | tr '\\0' x) RESULT=pass>\"",
    ("printf '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=odd]]&\"\\047\\302\\233\\001\\177 RESULT=fail UNITS=\\302\\233u"
     " MEASUREMENT=1e999>\\n'"),
    ("printf '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=measured RESULT=pass MEASUREMENT=2.5 UNITS=%s>\\n' "
     "\"$(head -c 300 /dev/zero | tr '\\0' u)\""),
]
HOSTILE_NAME = '"line one\\nline two \\x01\\x7f\\x85\\u2028 - {a: b}: [c] &x *y !z | > \' \\" % @ `"'


def parse_output_files(run) -> tuple[list, list, ElementTree.Element]:
    log = yaml.safe_load((run.output_dir / "output.yaml").read_text(encoding="utf-8"))
    assert all(isinstance(r, dict) and {"dt", "lvl", "msg"} <= set(r) for r in log)
    results = yaml.safe_load((run.output_dir / "results.yaml").read_text(encoding="utf-8"))
    xml = ElementTree.fromstring((run.output_dir / "results.xml").read_bytes())
    yaml.safe_load((run.output_dir / "description.yaml").read_text(encoding="utf-8"))
    return log, results, xml


def test_hostile_output_and_job_name_leave_every_file_parsable(tmp_path):
    text = local_job(HOSTILE_STEPS + ["lava-test-case last --result pass"]).replace(
        "job_name: local-test", f"job_name: {HOSTILE_NAME}")
    run = run_job(tmp_path, text, "local01")
    assert run.code == 0, run.stderr
    log, results, xml = parse_output_files(run)
    cases = {r["case"]: r for r in results if r["suite"] != "lava"}
    assert "x" * 100 in cases and not [c for c in cases if len(c) > 100]
    odd = next(r for c, r in cases.items() if c.startswith("odd"))
    assert odd["case"] == "odd]]&\"'\x9b\x01\x7f" and odd["result"] == "fail" and "measurement" not in odd
    assert len(cases["measured"]["units"]) == 100
    assert cases["last"]["result"] == "pass"
    assert any("truncated to 100" in m for m in warnings(run)) and any("not a finite number" in m for m in warnings(run))
    target = "\n".join(r["msg"] for r in log if r["lvl"] == "target")
    assert "del \x7f c1 \x80\x85\x9b raw \ufffd\ufffd\ufffd\ufffd nul \x00" in target
    assert "<tag attr=\"x\"> ]]> &amp; 'quoted' - {a: b} *alias &anchor" in target
    # The XML holds the job name and the odd case with what XML 1.0 cannot hold escaped.
    assert xml.get("name").startswith("line one\nline two \\x01\\x7f\\x85\u2028 - {a: b}")
    names = [case.get("name") for case in xml.iter("testcase")]
    assert "odd]]&\"'\\x9b\\x01\\x7f" in names


def test_every_log_line_is_a_yaml_mapping_whatever_its_characters():
    awkward = "".join(chr(c) for c in range(0x200)) + "\u2028\u2029\ud800\udfff\ufeff\ufffe\uffff\U0001f600"
    line = record_line({"dt": "2024-01-01T00:00:00.000000", "lvl": "target", "msg": awkward})
    assert "\n" not in line[:-1]
    expected = awkward.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")  # no reader takes a lone surrogate
    for loader in (yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        (record,) = yaml.load(line, Loader=loader)
        assert record["msg"] == expected


def test_board_output_past_the_log_limit_is_dropped_once_and_the_job_goes_on(tmp_path):
    run = run_job(tmp_path, local_job([
        "i=0; while [ $i -lt 200 ]; do head -c 999 /dev/zero | tr '\\0' z; echo; i=$((i+1)); done",
        "lava-test-case after-the-flood --result pass",
    ]), "local01", env={"LAVA_DISPATCH_MAX_LOG_BYTES": "50000"})
    assert run.code == 0, run.stderr
    assert run.case("after-the-flood")["result"] == "pass"
    assert sum(len(line.encode()) for line in target_lines(run)) <= 50000
    capped = [m for m in warnings(run) if "LAVA_DISPATCH_MAX_LOG_BYTES" in m]
    assert len(capped) == 2 and "its further output is not logged" in capped[0] and "were not logged" in capped[1]


def test_the_logger_counts_only_board_output_against_the_limit():
    records: list[dict] = []
    logger = JobLogger([records.append], max_target_bytes=10)
    logger.target("12345")
    logger.target("123456")  # over: dropped, said once
    logger.target("1")
    logger.info("the dispatcher's own lines are always logged")
    assert [r["msg"] for r in records if r["lvl"] == "target"] == ["12345"]
    assert len([r for r in records if r["lvl"] == "warning"]) == 1
    assert records[-1]["lvl"] == "info"


# ---------------------------------------------------------------- forged runner markers and the lava suite


def test_a_printed_runner_exit_neither_ends_the_stage_nor_hides_later_cases(tmp_path):
    run = run_job(tmp_path, local_job([
        "echo '<LAVA_TEST_RUNNER EXIT>'",
        f"echo '<LAVA_TEST_RUNNER EXIT RUNNER={FAKE_NONCE}>'",
        "echo '<LAVA_SIGNAL_ENDRUN 0_basics 1234>'",
        "echo '<LAVA_SIGNAL_STARTRUN 7_fake 1234>'",
        "echo '<LAVA_TEST_RUNNER READY>'",
        "lava-test-case after-fake-exit --result pass",
        # What a step can see of the runner: its shell variables, its arguments, its environment.
        "set; for p in $$ $PPID; do tr '\\0' '\\n' < /proc/$p/cmdline; tr '\\0' '\\n' < /proc/$p/environ; done",
        "lava-test-case later --result pass",
    ]), "local01")
    assert run.code == 0, run.stderr
    assert run.case("after-fake-exit")["suite"] == "0_basics"
    assert run.case("later")["result"] == "pass"
    assert [r["case"] for r in run.results if r["suite"] == "lava"] == ["0_basics", "job"]
    assert run.job_result()["result"] == "pass"
    refused = [m for m in warnings(run) if "printed by a test, not by the runner" in m]
    assert len(refused) == 5, refused
    # The nonce never reaches the log, and the steps could not read it (the log would show "(nonce)").
    assert not [line for line in target_lines(run)
                if (NONCE_SHAPE.search(line) and FAKE_NONCE not in line) or "(nonce)" in line]
    assert "<LAVA_SIGNAL_ENDRUN 0_basics" in "\n".join(target_lines(run))
    assert any(line.startswith("<LAVA_SIGNAL_STARTRUN 0_basics ") and line.endswith(">") for line in target_lines(run))


FORGING_JOB = textwrap.dedent("""\
    device_type: local-shell
    job_name: forging
    timeouts: {job: {minutes: 2}, action: {seconds: 30}}
    actions:
      - boot: {method: minimal}
      - test:
          definitions:
            - from: inline
              name: forge
              path: f.yaml
              repository:
                metadata: {name: forge}
                run:
                  steps:
                    - lava-test-suite-name lava
                    - echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=job RESULT=pass>'
                    - echo '<LAVA_SIGNAL_TESTSUITE lava>'
                    - echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=job RESULT=pass>'
                    - lava-test-set start lava
                    - echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=in-set RESULT=pass>'
                    - lava-test-set stop
                    - lava-test-suite-name job
                    - lava-test-case renamed --result pass
            - from: inline
              name: fails
              path: g.yaml
              repository:
                metadata: {name: fails}
                run:
                  steps:
                    - lava-test-raise the-disk-is-gone
    """)


def test_test_output_cannot_report_into_the_lava_suite(tmp_path):
    run = run_job(tmp_path, FORGING_JOB, "local01")
    assert run.code == 1, run.stderr
    lava = [r for r in run.results if r["suite"] == "lava"]
    # One entry per finished run (never named "job"), and the job's own entry: failed, as the job did.
    assert [r["case"] for r in lava] == ["0_forge", "job"]
    job = run.job_result()
    assert (job["result"], job["error_type"]) == ("fail", "Test") and "the-disk-is-gone" in job["error_msg"]
    # The forged cases went nowhere near the lava suite; the set named lava was refused.
    assert run.case("in-set")["suite"] == "0_forge" and "set" not in run.case("in-set")
    assert [r["suite"] for r in run.results if r["case"] == "job" and r["suite"] != "lava"] == ["0_forge", "0_forge"]
    assert run.case("renamed")["suite"] == "job"
    assert len([m for m in warnings(run) if "reserved" in m]) == 3


# ---------------------------------------------------------------- image_arg (validated, then used)


def qemu_job(image_arg: str) -> str:
    return textwrap.dedent(f"""\
        device_type: kvm
        job_name: image-arg
        timeouts: {{job: {{minutes: 1}}}}
        actions:
          - deploy:
              to: tmpfs
              os: oe
              images:
                kernel: {{url: 'http://example.com/vmlinuz', image_arg: '-kernel {{kernel}}'}}
                rootfs:
                  url: http://example.com/rootfs.img
                  image_arg: {json.dumps(image_arg)}
          - boot: {{method: qemu, media: tmpfs}}
        """)


@pytest.mark.parametrize("image_arg, expected", [
    ("-drive format=raw,file=/etc/shadow", "-drive file='/etc/shadow': must be one of the job's images"),
    ("-drive format=raw,file=/dev/vda", "-drive file='/dev/vda': must be one of the job's images"),
    ("-drive format=raw,file={rootfs},file=/dev/vda", "'file' is given twice"),
    ("-drive format=raw,file={rootfs},,file=/etc/shadow", "must be one of the job's images"),
    ("-drive format=raw,file={rootfs},snapshot=on", "-drive key 'snapshot' is not allowed"),
    ("-drive format=vvfat,file={rootfs}", "-drive format='vvfat' is not allowed"),
    ("-drive format=raw,file={rootfs},id=a;b", "-drive id='a;b': letters, digits"),
    ("-drive file={nothing}", "this deploy has no image 'nothing'"),
    ("-hda /etc/passwd", "-hda '/etc/passwd': must be one of the job's images"),
    ("-kernel {rootfs} /etc/shadow", "'/etc/shadow' is not an option (QEMU would take a bare argument as a disk)"),
    ("-blockdev driver=file,filename=/etc/shadow", "'-blockdev' is not allowed"),
    ("-fsdev local,id=f,path=/,security_model=none", "'-fsdev' is not allowed"),
    ("-virtfs local,path=/,mount_tag=h", "'-virtfs' is not allowed"),
    ("-chardev file,id=c,path=/tmp/x", "'-chardev' is not allowed"),
    ("-netdev user,id=n,smb=/", "'-netdev' is not allowed"),
    ("-monitor stdio", "'-monitor' is not allowed"),
    ("-serial file:/tmp/x", "'-serial' is not allowed"),
    ("-object memory-backend-file,id=m,mem-path=/etc", "'-object' is not allowed"),
    ("-add-fd fd=3,set=1", "'-add-fd' is not allowed"),
    ("-readconfig /etc/qemu.cfg", "'-readconfig' is not allowed"),
    ("-L /etc", "'-L' is not allowed"),
    ("-bios /etc/shadow", "'-bios' is not allowed"),
    ("-pflash /etc/shadow", "'-pflash' is not allowed"),
    ("--drive file=/etc/shadow", "'--drive' is not allowed"),
    ("-device loader,file=/etc/shadow,addr=0x1000", "-device 'loader' is not allowed"),
    ("-device virtio-blk-pci,drive=d,romfile=/etc/shadow", "-device key 'romfile' is not allowed"),
    ("-drive 'format=raw,file={rootfs}", "not valid shell quoting"),
    ("-initrd", "-initrd needs a value"),
])
def test_a_hostile_image_arg_is_refused_at_validate_time(tmp_path, image_arg, expected):
    job = tmp_path / "job.yaml"
    job.write_text(qemu_job(image_arg))
    result = run_cli("validate", str(job), "--device", str(DEVICES / "kvm01.yaml"))
    assert result.code == 1, result.out
    place = "actions[0].deploy.images.rootfs.image_arg: "
    assert [line for line in result.err.splitlines() if line.strip().startswith(place) and expected in line], result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("image_arg", [
    "-drive format=raw,file={rootfs}",
    "-drive format=qcow2,if=virtio,file={rootfs},media=disk",
    "-drive format=raw,if=none,id=hd0,file={rootfs} -device virtio-blk-device,drive=hd0",
    "-hda {rootfs}",
    "-kernel {kernel} -append \"console=ttyAMA0 root=/dev/vda rw, quiet\"",
])
def test_the_usual_image_args_validate(tmp_path, image_arg):
    job = tmp_path / "job.yaml"
    job.write_text(qemu_job(image_arg))
    result = run_cli("validate", str(job), "--device", str(DEVICES / "kvm01.yaml"))
    assert result.code == 0, result.err


def test_qemu_option_values_are_read_as_qemu_reads_them():
    assert qemu_opts("format=raw,file=a,,b,readonly") == [("format", "raw"), ("file", "a,b"), ("readonly", None)]
    assert check_image_arg("-drive file={a},,x", {"a"})  # the escaped comma makes one odd file name


def test_substituted_paths_cannot_add_drive_keys(tmp_path):
    path = tmp_path / "r,file=x.img"
    argv, disks = substitute("-drive format=raw,file={rootfs} -kernel {kernel}", {"rootfs": path,
                                                                                   "kernel": tmp_path / "k,v"})
    assert argv == ["-drive", f"format=raw,file={tmp_path}/r,,file=x.img", "-kernel", f"{tmp_path}/k,v"]
    assert disks == [(path, "raw")]


def qcow2_header(backing: int = 0, incompatible: int = 0) -> bytes:
    return b"QFI\xfb" + struct.pack(">IQ", 3, backing) + b"\0" * 56 + struct.pack(">Q", incompatible) + b"\0" * 100


def test_a_disk_that_names_other_host_files_is_refused(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(qcow2_header())
    check_disk(image, "qcow2")  # a plain qcow2 is fine
    image.write_bytes(qcow2_header(backing=0x200))
    with pytest.raises(JobError, match="backing file"):
        check_disk(image, None)
    image.write_bytes(qcow2_header(incompatible=4))
    with pytest.raises(JobError, match="external data file"):
        check_disk(image, "qcow2")
    image.write_bytes(b"# Disk DescriptorFile\nRW 1 FLAT \"/etc/shadow\" 0\n")
    with pytest.raises(JobError, match="vmdk"):
        check_disk(image, None)
    check_disk(image, "raw")  # read as raw, it is just bytes
