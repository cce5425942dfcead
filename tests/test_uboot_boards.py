"""End to end on the emulated ARM boards: u-boot, TFTP, NFS roots, power and console commands.

Each board is a QEMU that ``deploy/qemu-board`` drives through the device's
``commands`` (console socket like ser2net, QMP like a PDU); every job runs
as a real ``lava-dispatch run`` process. Each test gets its own copy of the
sample device with its TFTP tree and board state under the test's
directory; the NFS trees share one session directory so that nfs-ganesha
(one per host) is not restarted for each test. The module stops nfs-ganesha
at its end and checks that no QEMU or NFS server is left.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import DEVICES, ROOT, JobRun, processes_matching, run_job, wait_for

QEMU_BOARD = ROOT / "deploy" / "qemu-board"
PROMPT = "root@lava-board:~# "


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def nfs_tree(tmp_path_factory):
    """The NFS root tree of every board in this module; nfs-ganesha is stopped at the end."""
    from pipeline.nfs import NfsServer

    tree = tmp_path_factory.mktemp("nfs")
    yield tree
    NfsServer().stop()
    leftovers = [pid for pid in processes_matching("ganesha.nfsd") if _alive(pid)]
    assert not leftovers, f"nfs-ganesha still runs: {leftovers}"
    qemus = [pid for pid in processes_matching("qemu-system-a") if _alive(pid)]
    assert not qemus, f"QEMU still runs: {qemus}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def lab(tmp_path, nfs_tree):
    return Lab(tmp_path, nfs_tree)


class Lab:
    """Device copies of the sample boards, rooted under one test's directory."""

    def __init__(self, tmp_path: Path, nfs_tree: Path):
        self.tmp = tmp_path
        self.tftp = tmp_path / "tftp"
        self.nfs = nfs_tree
        self.state = tmp_path / "boards"
        self.env = {"PATH": f"{ROOT / 'deploy'}{os.pathsep}{os.environ['PATH']}",
                    "QEMU_BOARD_STATE": str(self.state)}

    def device(self, base: str, board: str | None = None, edit=None) -> Path:
        """A copy of sample device ``base`` named ``board`` (the board name is the file's name)."""
        text = (DEVICES / f"{base}.yaml").read_text()
        text = text.replace("/var/lib/lava-dispatch/tftp", str(self.tftp))
        text = text.replace("/var/lib/lava-dispatch/nfs", str(self.nfs))
        data = yaml.safe_load(text)
        if edit:
            edit(data)
        path = self.tmp / "devices" / f"{board or base}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, job: str, device: Path, name: str = "job", timeout: float = 400) -> JobRun:
        return run_job(self.tmp, job, device, timeout=timeout, env=self.env, name=name)

    def popen(self, job: str, device: Path, name: str) -> tuple[subprocess.Popen, Path]:
        job_file = self.tmp / f"{name}.yaml"
        job_file.write_text(job)
        output = self.tmp / f"{name}-output"
        scratch = self.tmp / "scratch"
        scratch.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(scratch), **self.env}
        process = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", str(job_file), "--device", str(device),
                                    "--output-dir", str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env, cwd=ROOT)
        return process, output

    def tftp_files(self) -> list[Path]:
        return sorted(self.tftp.rglob("*")) if self.tftp.exists() else []

    def nfs_files(self, board: str) -> list[Path]:
        return sorted((self.nfs / board).rglob("*")) if (self.nfs / board).exists() else []

    def qemus(self) -> list[int]:
        return [pid for pid in processes_matching(str(self.state)) if _alive(pid)]


def definition_block(name: str, steps: list[str]) -> str:
    lines = "\n".join(f"                - {json.dumps(step)}" for step in steps)
    return f"""
  - test:
      timeout: {{minutes: 3}}
      definitions:
        - from: inline
          name: {name}
          path: inline/{name}.yaml
          repository:
            metadata: {{format: Lava-Test Test Definition 1.0, name: {name}}}
            run:
              steps:
{lines}
"""


def tftp_job(name: str, device_type: str, files: dict[str, str], commands: str, boot_type: str,
             tests: str = "", boot_extra: str = "", deploy_extra: str = "") -> str:
    entries = "\n".join(f"      {key}: {value}" for key, value in files.items())
    return textwrap.dedent(f"""\
        device_type: {device_type}
        job_name: {name}
        timeouts:
          job: {{minutes: 15}}
          action: {{minutes: 5}}
        actions:
        """) + f"""  - deploy:
      to: tftp
{entries}
{deploy_extra}
  - boot:
      method: u-boot
      commands: {commands}
      type: {boot_type}
      prompts: ['{PROMPT}']
{boot_extra}
""" + tests


def logged_directories(run: JobRun, what: str) -> list[str]:
    return [m.split(" ", 2)[2] for m in run.messages() if m.startswith(f"{what} directory ")]


def target_lines(run: JobRun) -> list[str]:
    return [r["msg"] for r in run.log if r["lvl"] == "target"]


def assert_clean(lab: Lab, board: str) -> None:
    assert lab.tftp_files() == [], "TFTP files left after the job"
    assert lab.nfs_files(board) == [], "NFS root files left after the job"
    wait_for(lambda: not lab.qemus(), 10, "the board's QEMU to end")


NFS_STEPS = [
    "lava-test-case root-is-nfs --shell grep -q ' / nfs4 ' /proc/mounts",
    "lava-test-case rootfs-stage --shell grep -q LAVA_BOARD_STAGE=rootfs /etc/lava-board-release",
    "lava-test-case root-writable --shell touch /written-by-the-board",
]


# ---------------------------------------------------------------- the seed's examples


@pytest.mark.qemu
@pytest.mark.parametrize("arch,base,kernel,boot_type", [
    ("arm64", "arm64-uboot01", "Image", "booti"),
    ("arm", "arm-uboot01", "zImage", "bootz"),
])
def test_tftp_nfs_example_reaches_shell_on_nfs_root(lab, images, http_server, arch, base, kernel, boot_type):
    base_url = http_server(images / arch)
    files = {"kernel": f"{base_url}/{kernel}", "ramdisk": f"{base_url}/initrd.cpio.gz",
             "nfsrootfs": f"{base_url}/rootfs.tar.gz", "os": "oe", "dtb": f"{base_url}/virt.dtb"}
    job = tftp_job(f"{arch}-nfs", base.removesuffix("01"), files, "nfs", boot_type,
                   definition_block("nfs-root", [*NFS_STEPS, "lava-test-case machine --shell uname -m"]))
    device = lab.device(base)
    started = time.monotonic()
    run = lab.run(job, device)
    elapsed = time.monotonic() - started
    assert run.code == 0, run.stdout + run.stderr
    for case in ("root-is-nfs", "rootfs-stage", "root-writable", "machine"):
        assert run.case(case)["result"] == "pass", case
    assert run.job_result()["result"] == "pass"
    messages = run.messages()
    # The root the board mounted is this job's own directory of the NFS tree.
    (nfs_root,) = [m.split(": ")[1].split(" entries in ")[1] for m in messages if m.startswith("nfsrootfs: ")]
    assert nfs_root.startswith(f"{lab.nfs}/{base}/local-")
    assert any(f"nfsroot=10.0.2.2:{nfs_root}" in m for m in messages if m.startswith("bootloader command"))
    assert any(f"mounting 10.0.2.2:{nfs_root} on /" in line for line in target_lines(run))
    assert any(f"{boot_type} 0x40400000 0x44000000:${{initrd_size}} 0x43000000" in m for m in messages)
    assert any("power_off: qemu-board off" in m for m in messages)
    assert_clean(lab, base)
    print(f"{arch} {boot_type} NFS job: {elapsed:.1f} s")


@pytest.mark.qemu
def test_panda_style_uboot_ramdisk_bootm_carries_the_overlay(lab, images, http_server):
    base_url = http_server(images / "arm")
    files = {"kernel": f"{base_url}/uImage", "ramdisk": f"{base_url}/initrd.u-boot", "ramdisk-type": "u-boot",
             "dtb": f"{base_url}/virt.dtb"}
    job = tftp_job("panda-style", "arm-uboot", files, "ramdisk", "bootm", definition_block("ramdisk", [
        "lava-test-case root-is-ramdisk --shell grep -q '^rootfs / ' /proc/mounts",
        "lava-test-case overlay-in-ramdisk --shell test -x /lava-local/bin/lava-test-runner",
    ]))
    run = lab.run(job, lab.device("arm-uboot01"))
    assert run.code == 0, run.stdout + run.stderr
    assert run.case("root-is-ramdisk")["result"] == "pass"
    assert run.case("overlay-in-ramdisk")["result"] == "pass"
    messages = run.messages()
    order = [name for name in ("extract-overlay-ramdisk", "apply-overlay-tftp", "compress-ramdisk")
             if any(m.startswith("start: 1.") and m.split()[2] == name for m in messages)]
    assert order == ["extract-overlay-ramdisk", "apply-overlay-tftp", "compress-ramdisk"]
    assert any(m.startswith("ramdisk: u-boot header removed") for m in messages)
    assert any("u-boot header restored on initrd.u-boot" in m for m in messages)
    # bootm takes the ramdisk by its header: the address alone, no size.
    assert any(m.endswith("bootm 0x41000000 0x44000000 0x43000000") for m in messages)
    lines = target_lines(run)
    assert any("Loading init Ramdisk from Legacy Image" in line for line in lines)
    assert any("ARM Linux RAMDisk Image (uncompressed)" in line for line in lines)
    assert_clean(lab, "arm-uboot01")


@pytest.mark.qemu
def test_the_sample_jobs_run_on_the_sample_devices(tmp_path, images, nfs_tree):
    """sample_jobs/arm64-nfs.yaml and arm-ramdisk-bootm.yaml exactly as shipped (images on 127.0.0.1:8642)."""
    import http.server
    import threading
    from functools import partial

    from conftest import QuietHandler

    if not os.access("/var/lib", os.W_OK):
        pytest.skip("the sample devices keep their TFTP and NFS trees in /var/lib/lava-dispatch (run as root)")
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 8642), partial(QuietHandler, directory=str(images)))
    except OSError:
        pytest.skip("port 8642 is taken")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"PATH": f"{ROOT / 'deploy'}{os.pathsep}{os.environ['PATH']}", "QEMU_BOARD_STATE": str(tmp_path / "boards")}
    try:
        for job, device in (("arm64-nfs", "arm64-uboot01"), ("arm-ramdisk-bootm", "arm-uboot01")):
            run = run_job(tmp_path, (ROOT / "sample_jobs" / f"{job}.yaml").read_text(), device, env=env, name=job,
                          timeout=400)
            assert run.code == 0, run.stdout + run.stderr
            assert all(r["result"] == "pass" for r in run.results), run.results
            tftp = Path(logged_directories(run, "TFTP")[0])
            assert not tftp.exists()
    finally:
        server.shutdown()
        server.server_close()
    wait_for(lambda: not [p for p in processes_matching(str(tmp_path / "boards")) if _alive(p)], 10, "QEMU to end")


# ---------------------------------------------------------------- what is refused


def evil_tarball(path: Path, kind: str, outside: Path) -> Path:
    """A root filesystem tarball with one member that escapes (what ``kind`` says)."""
    def add(archive, name, data=b"x\n", **fields):
        info = tarfile.TarInfo(name)
        for key, value in fields.items():
            setattr(info, key, value)
        if info.isreg():
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        else:
            archive.addfile(info)

    with tarfile.open(path, "w:gz") as archive:
        add(archive, "etc", type=tarfile.DIRTYPE, mode=0o755)
        add(archive, "etc/hostname", b"board\n")
        if kind == "dotdot":
            add(archive, f"../../../../../../../..{outside}/dotdot")
        elif kind == "absolute":
            add(archive, f"{outside}/absolute")
        elif kind == "symlink-out":
            add(archive, "etc/escape", type=tarfile.SYMTYPE, linkname="../../../../../../../../" + str(outside))
        elif kind == "through-symlink":
            add(archive, "etc/out", type=tarfile.SYMTYPE, linkname=str(outside))
            add(archive, "etc/out/through")
        elif kind == "file-over-symlink":
            add(archive, "etc/over", type=tarfile.SYMTYPE, linkname=f"{outside}/victim")
            add(archive, "etc/over", b"overwritten\n")
        elif kind == "hardlink-through-symlink":
            add(archive, "etc/dir", type=tarfile.SYMTYPE, linkname=str(outside))
            add(archive, "etc/hard", type=tarfile.LNKTYPE, linkname="etc/dir/victim")
        elif kind == "device":
            add(archive, "dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
    return path


EVIL = {
    "dotdot": "leaves the target directory ('..')",
    "absolute": "has an absolute path",
    "symlink-out": "points out of the target",
    "through-symlink": "would be written through a symbolic link",
    "file-over-symlink": "would be written through the link",
    "hardlink-through-symlink": "goes through a symbolic link",
    "device": "is a device file",
}


@pytest.mark.qemu
@pytest.mark.parametrize("kind", list(EVIL))
def test_nfsrootfs_tarball_that_escapes_is_rejected(lab, images, kind):
    outside = lab.tmp / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    tarball = evil_tarball(lab.tmp / f"{kind}.tar.gz", kind, outside)
    files = {"kernel": f"file://{images}/arm64/Image", "ramdisk": f"file://{images}/arm64/initrd.cpio.gz",
             "nfsrootfs": f"file://{tarball}", "os": "oe"}
    job = tftp_job(f"evil-{kind}", "arm64-uboot", files, "nfs", "booti", definition_block("never", ["true"]))
    run = lab.run(job, lab.device("arm64-uboot01"))
    assert run.code == 1, run.stdout + run.stderr
    result = run.job_result()
    assert result["result"] == "fail"
    assert result["error_type"] == "Job", result
    assert EVIL[kind] in result["error_msg"], result
    # Nothing was written outside the job's directory, which is gone; the board never started.
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "untouched\n"
    assert (outside / "victim").stat().st_nlink == 1
    assert not any(m.startswith("start: 2 ") for m in run.messages())
    assert not lab.state.exists() and lab.qemus() == []
    assert lab.tftp_files() == [] and lab.nfs_files("arm64-uboot01") == []


@pytest.mark.qemu
def test_kernel_url_with_reset_is_refused_before_anything_boots(lab, images):
    files = {"kernel": "'http://127.0.0.1:1/Image;reset'", "ramdisk": f"file://{images}/arm64/initrd.cpio.gz"}
    job = tftp_job("reset-injection", "arm64-uboot", files, "ramdisk", "booti")
    run = lab.run(job, lab.device("arm64-uboot01"))
    assert run.code == 2, run.stdout + run.stderr
    assert "actions[0].deploy.kernel" in run.stderr and "character ';' is not allowed" in run.stderr
    assert not run.output_dir.exists()
    assert not lab.state.exists() and lab.qemus() == []
    assert lab.tftp_files() == []


# ---------------------------------------------------------------- bootloader errors and retries


@pytest.mark.qemu
@pytest.mark.parametrize("case", ["booti-of-a-zimage", "bootm-ramdisk-without-header", "bootm-ramdisk-is-a-kernel",
                                  "tftp-file-missing"])
def test_bootloader_error_fails_fast(lab, images, case):
    edit = None
    if case == "booti-of-a-zimage":
        base, files, commands, boot_type = "arm64-uboot01", {"kernel": f"file://{images}/arm/zImage"}, "ramdisk", "booti"
        expected, error_type, uboot_says = "not an arm64 Image", "Job", "Bad Linux ARM64 Image magic!"
    elif case == "bootm-ramdisk-without-header":
        # A raw ramdisk handed to bootm by its address alone, as for a ramdisk with a u-boot header.
        base, commands, boot_type = "arm-uboot01", "ramdisk", "bootm"
        files = {"kernel": f"file://{images}/arm/uImage", "ramdisk": f"file://{images}/arm/initrd.cpio.gz"}
        expected, error_type, uboot_says = "wrong ramdisk image format", "Job", "Wrong Ramdisk Image Format"

        def edit(data):
            data["actions"]["boot"]["methods"]["u-boot"]["ramdisk"]["commands"][-1] = \
                "bootm {KERNEL_ADDR} {RAMDISK_ADDR} ${fdtcontroladdr}"
    elif case == "bootm-ramdisk-is-a-kernel":
        # A u-boot image that is not a ramdisk: bootm refuses it.
        base, commands, boot_type = "arm-uboot01", "ramdisk", "bootm"
        files = {"kernel": f"file://{images}/arm/uImage", "ramdisk": f"file://{images}/arm/uImage"}
        expected, error_type, uboot_says = "is not an ARM ramdisk's", "Job", "No Linux ARM Ramdisk Image"
    else:
        base, files, commands, boot_type = "arm64-uboot01", {"kernel": f"file://{images}/arm64/Image"}, "ramdisk", "booti"
        expected, error_type, uboot_says = "TFTP error", "Infrastructure", "TFTP error"

        def edit(data):  # a device whose command list names a file nobody deployed
            data["actions"]["boot"]["methods"]["u-boot"]["ramdisk"]["commands"].insert(3, "tftp 0x48000000 no-such-file")
    job = tftp_job(case, base.removesuffix("01"), files, commands, boot_type)
    run = lab.run(job, lab.device(base, edit=edit))
    assert run.code == 1, run.stdout + run.stderr
    result = run.job_result()
    assert result["error_type"] == error_type and expected in result["error_msg"], result
    assert any(uboot_says in line for line in target_lines(run))
    commands_step = next(d for d in yaml.safe_load((run.output_dir / "description.yaml").read_text())["pipeline"]
                         if d["name"] == "bootloader-commands")
    # Seen at once, not after the 2-minute wait for the kernel.
    assert commands_step["duration"] < 30, commands_step
    assert not any(m.startswith("start: 2.4.4 ") for m in run.messages())
    assert_clean(lab, base)


@pytest.mark.qemu
@pytest.mark.parametrize("failure", ["bootloader-error", "power-failure"])
def test_failure_retry_repeats_the_boot_from_power_on(lab, images, failure):
    flag = lab.tmp / "first-attempt-done"
    zimage = images / "arm" / "zImage"

    def edit(data):
        reset = data["commands"]["hard_reset"]
        if failure == "bootloader-error":
            # The first power-on finds a zImage where the job's arm64 Image is: u-boot says
            # "Bad Linux ARM64 Image magic!"; the second finds the Image again.
            data["commands"]["hard_reset"] = (
                f"for f in {lab.tftp}/{{BOARD}}/*/kernel/Image; do if [ ! -e {flag} ]; then mv $f $f.good; "
                f"cp {zimage} $f; elif [ -e $f.good ]; then mv $f.good $f; fi; done; touch {flag}; {reset}")
        else:
            data["commands"]["hard_reset"] = f"if [ ! -e {flag} ]; then touch {flag}; echo PDU busy >&2; exit 1; fi; {reset}"

    files = {"kernel": f"file://{images}/arm64/Image", "ramdisk": f"file://{images}/arm64/initrd.cpio.gz"}
    job = tftp_job(f"retry-{failure}", "arm64-uboot", files, "ramdisk", "booti",
                   definition_block("after-retry", ["lava-test-case booted --shell uname -m"]), boot_extra="      failure_retry: 2")
    run = lab.run(job, lab.device("arm64-uboot01", edit=edit))
    assert run.code == 0, run.stdout + run.stderr
    assert run.case("booted")["result"] == "pass"
    messages = run.messages()
    warnings = [r["msg"] for r in run.log if r["lvl"] == "warning"]
    if failure == "bootloader-error":
        assert any("uboot-commands: JobError: u-boot: the kernel is not an arm64 Image" in w for w in warnings), warnings
        # Logged as far as it was read when the failure matched (the "!" may come in the next read).
        assert sum("Bad Linux ARM64 Image magic" in line for line in target_lines(run)) == 1
    else:
        assert any("uboot-commands: InfrastructureError: hard_reset failed (exit 1): PDU busy" in w for w in warnings)
    assert "uboot-commands: attempt 2 of 2" in messages
    # The second attempt starts from power-on and goes through u-boot again.
    second = messages[messages.index("uboot-commands: attempt 2 of 2"):]
    starts = [m.split()[2] for m in second if m.startswith("start: 2.4.")]
    assert starts[:4] == ["reset-device", "pdu-reboot", "bootloader-interrupt", "bootloader-commands"]
    assert sum(m.startswith("hard_reset: ") for m in messages) == 2
    assert_clean(lab, "arm64-uboot01")


# ---------------------------------------------------------------- two boards at once


@pytest.mark.qemu
def test_two_boards_boot_different_jobs_at_the_same_time(lab, images, http_server):
    """Two `lava-dispatch run` on two boards sharing one TFTP tree: each job has its own files."""
    arm64 = http_server(images / "arm64")
    arm = http_server(images / "arm")
    check = "lava-test-case own-kernel --shell uname -m"
    job_a = tftp_job("board-a", "arm64-uboot", {"kernel": f"{arm64}/Image", "ramdisk": f"{arm64}/initrd.cpio.gz",
                                                 "nfsrootfs": f"{arm64}/rootfs.tar.gz", "os": "oe"},
                     "nfs", "booti", definition_block("a", [*NFS_STEPS, check]))
    job_b = tftp_job("board-b", "arm64-uboot", {"kernel": f"{arm64}/Image", "ramdisk": f"{arm64}/initrd.cpio.gz",
                                                 "dtb": f"{arm64}/virt.dtb"},
                     "ramdisk", "booti", definition_block("b", [check]))
    job_c = tftp_job("board-c", "arm-uboot", {"kernel": f"{arm}/zImage", "ramdisk": f"{arm}/initrd.cpio.gz"},
                     "ramdisk", "bootz", definition_block("c", [check]))
    runs = [lab.popen(job_a, lab.device("arm64-uboot01", "arm64-board-a"), "a"),
            lab.popen(job_b, lab.device("arm64-uboot01", "arm64-board-b"), "b"),
            lab.popen(job_c, lab.device("arm-uboot01", "arm-board-c"), "c")]
    results = []
    for process, output in runs:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
        results.append(JobRun(process.returncode, out, err, output))
    tftp_dirs = [logged_directories(run, "TFTP")[0] for run in results]
    assert len(set(tftp_dirs)) == 3
    for run, board in zip(results, ("arm64-board-a", "arm64-board-b", "arm-board-c")):
        assert all(r["result"] == "pass" for r in run.results), run.results
        (directory,) = logged_directories(run, "TFTP")
        assert directory.startswith(f"{lab.tftp}/{board}/local-")
        # u-boot loaded this job's files and no other.
        loaded = [line.split("'")[1] for line in target_lines(run) if line.startswith("Filename '")]
        assert loaded and all(name.startswith(directory.removeprefix(f"{lab.tftp}/")) for name in loaded), loaded
    assert results[0].case("own-kernel")["result"] == "pass"
    # The boots overlapped: each board was in u-boot or later while another one was.
    windows = []
    for run in results:
        times = {r["msg"].split()[2]: r["dt"] for r in run.log if isinstance(r["msg"], str)
                 and r["msg"].startswith(("start: 2.4.2 ", "end: 3 "))}
        windows.append((times["bootloader-interrupt"], times["lava-test-retry"]))
    assert max(start for start, _ in windows) < min(end for _, end in windows), windows
    assert lab.tftp_files() == []
    wait_for(lambda: not lab.qemus(), 10, "the boards' QEMUs to end")


# ---------------------------------------------------------------- the board helper and the NFS server


def qemu_board(lab: Lab, *argv: str) -> str:
    result = subprocess.run([str(QEMU_BOARD), *argv], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **lab.env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.qemu
def test_qemu_board_power_states(lab):
    start = ["--arch", "arm64", "--tftp-root", str(lab.tftp)]
    assert qemu_board(lab, "status", "b1") == "absent"
    qemu_board(lab, "start", "b1", *start)
    state, pid = qemu_board(lab, "status", "b1").split()
    assert state == "off"
    qemu_board(lab, "on", "b1", *start)
    assert qemu_board(lab, "status", "b1") == f"on {pid}"
    qemu_board(lab, "reset", "b1", *start)
    assert qemu_board(lab, "status", "b1") == f"on {pid}"
    qemu_board(lab, "off", "b1")  # not held: power off ends QEMU
    assert qemu_board(lab, "status", "b1") == "absent"
    qemu_board(lab, "start", "b1", "--hold", *start)
    state, held_pid = qemu_board(lab, "status", "b1").split()
    qemu_board(lab, "on", "b1", *start)
    qemu_board(lab, "off", "b1")  # held (a worker's board): QEMU stays, off
    assert qemu_board(lab, "status", "b1") == f"off {held_pid}"
    qemu_board(lab, "destroy", "b1")
    assert qemu_board(lab, "status", "b1") == "absent"
    bad = subprocess.run([str(QEMU_BOARD), "on", "b2"], capture_output=True, text=True, env={**os.environ, **lab.env})
    assert bad.returncode == 1 and "give --arch and --tftp-root" in bad.stderr
    assert lab.qemus() == []


@pytest.mark.qemu
def test_nfs_server_is_started_once_and_restarted_for_a_new_tree(tmp_path, nfs_tree):
    from pipeline.nfs import NfsServer

    server = NfsServer()
    server.ensure_export(nfs_tree)
    pid = server.pid()
    assert pid
    server.ensure_export(nfs_tree)
    (nfs_tree / "board" / "job").mkdir(parents=True)
    server.ensure_export(nfs_tree / "board")  # inside an exported tree: nothing to do
    assert server.pid() == pid
    other = tmp_path / "other-tree"
    server.ensure_export(other)
    assert server.pid() not in (None, pid)
    assert {str(nfs_tree), str(other)} <= set(server.exports())
    assert server.stop()
    assert server.pid() is None
    assert not server.stop()
    (nfs_tree / "board" / "job").rmdir()
    (nfs_tree / "board").rmdir()


# ---------------------------------------------------------------- substitution (no board needed)


def substitute(device_name: str, job_text: str, **context) -> list[str]:
    from pipeline.actions.boot.uboot import BootloaderCommandOverlay
    from pipeline.builder import build_pipeline
    from pipeline.context import JobContext
    from pipeline.deployment import Deployment
    from pipeline.device import load_device
    from pipeline.log import JobLogger
    from pipeline.parser import parse_job
    from pipeline.processes import ProcessRegistry

    job, device = parse_job(job_text), load_device(DEVICES / f"{device_name}.yaml")
    built = build_pipeline(job, device)
    overlay = next(a for a in built.pipeline.walk() if isinstance(a, BootloaderCommandOverlay))
    ctx = JobContext(job=job, device=device, logger=JobLogger([]), workdir=Path("/nonexistent"),
                     output_dir=Path("/nonexistent"), processes=ProcessRegistry(), board_name="b", job_id="1")
    ctx.deployment = Deployment("tftp", "actions[0].deploy", **context)
    overlay.run(ctx)
    return ctx.bootloader_commands


RAMDISK_JOB = tftp_job("subst", "arm64-uboot", {"kernel": "http://e.com/Image", "ramdisk": "http://e.com/initrd"},
                       "ramdisk", "booti")


def test_commands_leave_out_lines_of_files_not_deployed():
    commands = substitute("arm64-uboot01", RAMDISK_JOB, tftp_names={"kernel": "b/1/kernel/Image"})
    assert "tftp 0x40400000 b/1/kernel/Image" in commands
    assert not any("0x43000000" in c or "0x44000000" in c for c in commands)
    assert commands[-1] == "booti 0x40400000 - ${fdtcontroladdr}"


@pytest.mark.parametrize("value", ["Image;reset", "Image reset", "Image$(reset)", "a'b", 'a"b', "a\nreset",
                                   "${bootcmd}", "Image#", "a\\b", "a|b", "a&b"])
def test_substituted_value_cannot_inject_bootloader_commands(value):
    from pipeline.errors import JobError

    with pytest.raises(JobError, match="cannot be put into a bootloader command"):
        substitute("arm64-uboot01", RAMDISK_JOB, tftp_names={"kernel": f"b/1/kernel/{value}"})


def test_nfs_root_path_with_separator_is_refused(tmp_path):
    from pipeline.errors import JobError

    job = tftp_job("subst", "arm64-uboot", {"kernel": "http://e.com/Image", "nfsrootfs": "http://e.com/r.tar.gz",
                                            "os": "oe"}, "nfs", "booti")
    root = Path("/var/lib/lava-dispatch/nfs/b/1;reset")
    with pytest.raises(JobError, match="NFSROOTFS"):
        substitute("arm64-uboot01", job, tftp_names={"kernel": "b/1/kernel/Image"}, nfs_root=root)


def test_boot_type_must_be_one_the_device_supports(cli):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bootm-on-arm64-{os.getpid()}.yaml"
    path.write_text(RAMDISK_JOB.replace("type: booti", "type: bootm"))
    try:
        result = cli("validate", str(path), "--device", str(DEVICES / "arm64-uboot01.yaml"))
    finally:
        path.unlink()
    assert result.code == 1
    assert "the job asks for boot type 'bootm' but device type 'arm64-uboot' supports booti" in result.err


# ---------------------------------------------------------------- the lab: two boards, two workers


@pytest.fixture
def board_lab(lab):
    """A lab on a private Redis whose board workers drive emulated ARM boards (lab_helpers)."""
    from lab_helpers import running_lab

    with running_lab("uboot-lab-", extra_env=lab.env) as workers:
        yield workers


@pytest.mark.qemu
@pytest.mark.lab
def test_two_workers_boot_arm_boards_at_the_same_time(lab, board_lab, images, http_server):
    from tasks.records import get_job
    from tasks.scheduler import Lab as Scheduler

    boards = {"arm64-lab-a": lab.device("arm64-uboot01", "arm64-lab-a"),
              "arm64-lab-b": lab.device("arm64-uboot01", "arm64-lab-b")}
    for name, device in boards.items():
        board_lab.start_worker(name, device, wait=False)
    for name in boards:
        board_lab.wait_idle(name, 90)
    # Each worker's prepare command started its board's QEMU, powered off and held.
    assert len(lab.qemus()) == 2
    base_url = http_server(images / "arm64")
    files = {"kernel": f"{base_url}/Image", "ramdisk": f"{base_url}/initrd.cpio.gz",
             "nfsrootfs": f"{base_url}/rootfs.tar.gz", "os": "oe", "dtb": f"{base_url}/virt.dtb"}
    scheduler = Scheduler(board_lab.r())
    jobs = [scheduler.submit(tftp_job(f"lab-nfs-{n}", "arm64-uboot", files, "nfs", "booti",
                                      definition_block("nfs", NFS_STEPS))).job_id for n in range(2)]
    final = {}
    for job_id in jobs:
        final[job_id] = wait_for(lambda: (rec := get_job(board_lab.r(), job_id))["state"] in
                                   ("Complete", "Incomplete", "Canceled") and rec, 400, f"job {job_id}")
    runs = [JobRun(0, "", "", board_lab.base / "jobs" / job_id) for job_id in jobs]
    assert {rec["state"] for rec in final.values()} == {"Complete"}, [
        (rec.get("error"), "\n".join(str(r["msg"]) for r in run.log[-60:])) for rec, run in zip(final.values(), runs)
        if rec["state"] != "Complete"]
    assert {rec["board"] for rec in final.values()} == set(boards)
    for run in runs:
        assert run.case("root-is-nfs")["result"] == "pass"
    directories = [logged_directories(run, "TFTP")[0] for run in runs]
    assert len(set(directories)) == 2 and all(not Path(d).exists() for d in directories)
    windows = []
    for run in runs:
        times = {r["msg"].split()[2]: r["dt"] for r in run.log if isinstance(r["msg"], str)
                 and r["msg"].startswith(("start: 2.4.2 ", "end: 3 "))}
        windows.append((times["bootloader-interrupt"], times["lava-test-retry"]))
    assert max(start for start, _ in windows) < min(end for _, end in windows), windows
    # Between jobs a held board stays powered off; the workers' destroy ends it.
    assert len(lab.qemus()) == 2
    board_lab.stop_all()
    wait_for(lambda: not lab.qemus(), 20, "the boards' QEMUs to end with their workers")
    assert lab.tftp_files() == []


def test_secondary_media_boot_loads_the_files_inside_the_image():
    """bbb-usb.yaml's second boot: kernel, dtb, partition and root UUID come from the usb deploy."""
    from pipeline.actions.boot.uboot import BootloaderCommandOverlay
    from pipeline.builder import build_pipeline
    from pipeline.context import JobContext
    from pipeline.deployment import Deployment
    from pipeline.device import load_device
    from pipeline.log import JobLogger
    from pipeline.parser import parse_job
    from pipeline.processes import ProcessRegistry

    job = parse_job((ROOT / "sample_jobs" / "bbb-usb.yaml").read_text())
    device = load_device(DEVICES / "bbb01.yaml")
    overlays = [a for a in build_pipeline(job, device).pipeline.walk() if isinstance(a, BootloaderCommandOverlay)]
    assert [a.media is not None for a in overlays] == [False, True]
    ctx = JobContext(job=job, device=device, logger=JobLogger([]), workdir=Path("/nonexistent"),
                     output_dir=Path("/nonexistent"), processes=ProcessRegistry(), board_name="bbb01", job_id="7")
    ctx.deployment = Deployment("tftp", "actions[0].deploy", tftp_names={"kernel": "bbb01/7-x/kernel/zImage"})
    overlays[1].run(ctx)
    assert ctx.bootloader_commands == [
        "usb start",
        "load usb 0:1 0x82000000 /boot/vmlinuz-4.4.0",
        "load usb 0:1 0x88000000 /boot/dtbs/am335x-boneblack.dtb",
        "setenv bootargs 'console=ttyO0,115200n8 root=UUID=159d17cc-697c-4125-95a0-a3775e1deabe rootwait'",
        "bootz 0x82000000 - 0x88000000",
    ]


@pytest.mark.qemu
def test_stopping_a_run_mid_boot_powers_the_board_off_and_cleans_up(lab, images):
    """SIGTERM (as Ctrl-C) while u-boot loads the files: Canceled, the board's QEMU gone, no TFTP or NFS files."""
    files = {"kernel": f"file://{images}/arm64/Image", "ramdisk": f"file://{images}/arm64/initrd.cpio.gz",
             "nfsrootfs": f"file://{images}/arm64/rootfs.tar.gz", "os": "oe"}
    job = tftp_job("stopped", "arm64-uboot", files, "nfs", "booti", definition_block("never", ["true"]))
    process, output = lab.popen(job, lab.device("arm64-uboot01"), "stopped")
    log = output / "output.yaml"
    wait_for(lambda: log.exists() and "start: 2.4.3 bootloader-commands" in log.read_text(), 120, "u-boot commands")
    assert lab.qemus()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, out + err
    run = JobRun(3, out, err, output)
    assert run.job_result()["error_type"] == "Canceled"
    assert any(m.startswith("power_off: qemu-board off arm64-uboot01") for m in run.messages())
    assert_clean(lab, "arm64-uboot01")
