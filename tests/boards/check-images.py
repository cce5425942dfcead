#!/usr/bin/env python3
"""Boot every board image built by build-images.sh under QEMU (TCG) and check
that each reaches the busybox shell; print the time from QEMU start to the
prompt for each. Exits non-zero if any board fails.

    python3 tests/boards/check-images.py [--images DIR] [--nfs] [--only NAME ...]

Guest checks on every board: kernel version, loaded modules, Ctrl-C at the
shell, a new shell after `exit`, HTTP to the host at 10.0.2.2 (when the
board has a NIC) and, on x86_64, a raw tar file attached as a virtio drive
and unpacked with `tar -xf /dev/vdX -C /tmp`.
--nfs also starts nfs-ganesha on 127.0.0.1:2049 (root needed) with
tests/boards/ganesha-example.conf and boots x86_64 and arm64 from NFS roots.
Every QEMU and ganesha process started here is killed by PID before exit.
"""
import argparse
import functools
import http.server
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pexpect

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = "root@lava-board:~# "
INIT_DONE = "lava-board: init done"
UBOOT_PROMPT = "=> "
ARM64 = [
    "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "512",
    "-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
    "-nographic", "-nodefaults", "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
]
ARM = [
    "qemu-system-arm", "-M", "virt", "-m", "512",
    "-bios", "/usr/lib/u-boot/qemu_arm/u-boot.bin",
    "-nographic", "-nodefaults", "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
]
# `-serial stdio` (the lab's command line) turns a Ctrl-C sent to the
# console into SIGINT for QEMU, which exits: the checks use a stdio chardev
# with signal=off so that Ctrl-C reaches the guest.
X86_LAB = [
    "qemu-system-x86_64", "-nographic", "-nodefaults", "-no-reboot", "-m", "256",
    "-serial", "stdio",
]
X86 = [
    "qemu-system-x86_64", "-nographic", "-nodefaults", "-no-reboot", "-m", "256",
    "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
]
X86_APPEND = "console=ttyS0 panic=-1 quiet"
ARM_APPEND = "console=ttyAMA0 panic=-1 quiet"
UBOOT_NET = ["setenv autoload no", "setenv ipaddr 10.0.2.15", "setenv serverip 10.0.2.2"]
UBOOT_ERRORS = re.compile(
    r"(Error|ERROR|error:|not found|Retry count exceeded|TFTP error|Bad |Wrong Image|"
    r"Unknown command|overlapping|must RESET)"
)


class CheckFailed(Exception):
    pass


class Board:
    """One QEMU process driven through its serial console."""

    def __init__(self, name, argv, logdir, timeout):
        self.name = name
        self.argv = argv
        self.timeout = timeout
        self.log = open(os.path.join(logdir, name + ".log"), "w")
        self.log.write(" ".join(argv) + "\n")
        self.t0 = time.monotonic()
        self.child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace",
            timeout=timeout, logfile=self.log, dimensions=(50, 200),
        )
        self.child.delaybeforesend = None
        self.facts = {}

    def expect(self, pattern, timeout=None):
        try:
            return self.child.expect(pattern, timeout=timeout or self.timeout)
        except pexpect.TIMEOUT:
            raise CheckFailed(f"timeout waiting for {pattern!r}; last output: "
                              f"{self.child.before[-300:]!r}")
        except pexpect.EOF:
            raise CheckFailed(f"QEMU exited waiting for {pattern!r}; last output: "
                              f"{self.child.before[-300:]!r}")

    def uboot(self, commands, boot):
        """Stop autoboot, run the commands, then the boot command."""
        self.expect("Hit any key to stop autoboot")
        self.child.send(" ")
        self.expect(UBOOT_PROMPT)
        self.facts["uboot_prompt_s"] = round(time.monotonic() - self.t0, 2)
        for cmd in commands:
            self.child.sendline(cmd)
            self.expect(UBOOT_PROMPT, timeout=60)
            out = self.child.before.split("\n", 1)[-1]
            if UBOOT_ERRORS.search(out):
                raise CheckFailed(f"u-boot: {cmd!r} said {out.strip()[-300:]!r}")
        self.child.sendline(boot)

    def wait_shell(self):
        self.expect(INIT_DONE)
        self.expect(PROMPT)
        self.facts["prompt_s"] = round(time.monotonic() - self.t0, 2)

    def run(self, cmd, timeout=30):
        """Run a shell command, return (status, output)."""
        self.child.sendline(f"{cmd}; echo @@RC=$?@@")
        self.expect(r"@@RC=(\d+)@@", timeout=timeout)
        out = self.child.before
        rc = int(self.child.match.group(1))
        self.expect(PROMPT)
        # Drop the echoed command line.
        out = out.split("\n", 1)[1] if "\n" in out else ""
        return rc, out.replace("\r", "").strip()

    def must(self, cmd, timeout=30):
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise CheckFailed(f"{cmd!r} exited {rc}: {out[-300:]!r}")
        return out

    def close(self):
        if self.child.isalive():
            os.kill(self.child.pid, signal.SIGKILL)
            self.child.wait()
        self.child.close(force=True)
        self.log.close()


def common_checks(b, http_port=None, tar_dev=None, nfs=False, ctrl_c=True):
    f = b.facts
    f["kernel"] = b.must("uname -r")
    f["modules"] = " ".join(sorted(
        line.split()[0] for line in b.must("cat /proc/modules").splitlines() if line.strip()))
    f["hostname"] = b.must("hostname")
    if f["hostname"] != "lava-board":
        raise CheckFailed(f"hostname {f['hostname']!r}")
    f["stage"] = b.must("cat /etc/lava-board-release | head -1")
    if nfs:
        mounts = b.must("cat /proc/mounts")
        root = [m for m in mounts.splitlines() if " / nfs" in m]
        if not root or "LAVA_BOARD_STAGE=rootfs" not in f["stage"]:
            raise CheckFailed(f"not on the NFS root: {mounts!r}")
        f["nfs_root"] = root[0]
        b.must("echo written > /tmp/nfs-write-test && cat /tmp/nfs-write-test")
    if ctrl_c:
        # Ctrl-C reaches the foreground job: the shell has a controlling tty.
        b.child.sendline("sleep 60")
        time.sleep(0.5)
        b.child.sendcontrol("c")
        b.expect(PROMPT, timeout=10)
    # `exit` gives a new shell, not a panic.
    b.child.sendline("exit")
    b.expect(PROMPT, timeout=20)
    b.must("true")
    if http_port:
        out = b.must(f"wget -q -O - http://10.0.2.2:{http_port}/hello.txt")
        if "hello from the host" not in out:
            raise CheckFailed(f"http: {out!r}")
        f["http"] = "ok"
    if tar_dev:
        f["block_devices"] = b.must("ls /sys/block | tr '\\n' ' '")
        out = b.must(f"tar -xf /dev/{tar_dev} -C /tmp && cat /tmp/lava-overlay/hello.txt")
        if "overlay content" not in out:
            raise CheckFailed(f"tar: {out!r}")
        f["tar_device"] = f"/dev/{tar_dev}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def start_http(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def make_tar(path):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        data = b"overlay content\n"
        info = tarfile.TarInfo("lava-overlay/hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


def start_ganesha(images, work):
    root = os.path.join(work, "nfs")
    state = os.path.join(work, "ganesha")
    os.makedirs(os.path.join(state, "recovery"), exist_ok=True)
    for arch in ("x86_64", "arm64", "arm"):
        d = os.path.join(root, arch)
        os.makedirs(d, exist_ok=True)
        subprocess.run(["tar", "-xzf", os.path.join(images, arch, "rootfs.tar.gz"), "-C", d],
                       check=True)
    conf = open(os.path.join(HERE, "ganesha-example.conf")).read()
    conf = conf.replace("@ROOT@", root).replace("@STATE@", state)
    cpath = os.path.join(state, "ganesha.conf")
    open(cpath, "w").write(conf)
    log = os.path.join(work, "logs", "ganesha.log")
    proc = subprocess.Popen(["ganesha.nfsd", "-F", "-f", cpath, "-L", log,
                             "-p", os.path.join(state, "ganesha.pid")])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"ganesha.nfsd exited {proc.returncode}, see {log}")
        ss = subprocess.run(["ss", "-ltnH", "sport = :2049"], capture_output=True, text=True)
        if ss.stdout.strip():
            return proc
        time.sleep(0.2)
    proc.kill()
    raise CheckFailed("ganesha.nfsd is not listening on 2049")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default=os.environ.get(
        "LAVA_DISPATCH_IMAGES", os.path.expanduser("~/.cache/lava-dispatch/images")))
    ap.add_argument("--only", nargs="*", help="board check names to run")
    ap.add_argument("--nfs", action="store_true", help="also boot from NFS (starts ganesha)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per wait")
    ap.add_argument("--keep", action="store_true", help="keep the work dir with the logs")
    args = ap.parse_args()
    img = os.path.abspath(args.images)
    work = tempfile.mkdtemp(prefix="lava-check-")
    logdir = os.path.join(work, "logs")
    os.makedirs(logdir)
    srv_dir = os.path.join(work, "http")
    os.makedirs(srv_dir)
    open(os.path.join(srv_dir, "hello.txt"), "w").write("hello from the host\n")
    srv = start_http(srv_dir)
    port = srv.server_address[1]
    tar = os.path.join(work, "overlay.tar")
    make_tar(tar)
    x = f"{img}/x86_64"
    a64 = f"{img}/arm64"
    a32 = f"{img}/arm"
    nic_pci = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    tar_drive = ["-drive", f"file={tar},format=raw,if=virtio,snapshot=on"]

    def tftp_net(d):
        return ["-netdev", f"user,id=n0,tftp={d}", "-device", "virtio-net-device,netdev=n0"]

    # name -> (argv, u-boot commands or None, boot command, check kwargs)
    checks = {
        # The plain command line of the lab, without NIC or extra drive.
        "x86_64-vmlinux-plain": (X86_LAB + ["-kernel", f"{x}/vmlinux", "-initrd", f"{x}/initrd.cpio.gz",
                                            "-append", X86_APPEND], None, None, dict(ctrl_c=False)),
        "x86_64-vmlinux": (X86 + ["-kernel", f"{x}/vmlinux", "-initrd", f"{x}/initrd.cpio.gz",
                                  "-append", X86_APPEND] + nic_pci + tar_drive,
                           None, None, dict(http_port=port, tar_dev="vda")),
        "x86_64-vmlinux-cpio": (X86 + ["-kernel", f"{x}/vmlinux", "-initrd", f"{x}/initrd.cpio",
                                       "-append", X86_APPEND], None, None, {}),
        "x86_64-bzImage": (X86 + ["-kernel", f"{x}/bzImage", "-initrd", f"{x}/initrd.cpio.gz",
                                  "-append", X86_APPEND] + nic_pci, None, None, dict(http_port=port)),
        "x86_64-disk-ide": (X86 + ["-drive", f"file={x}/disk.img,format=raw,if=ide,snapshot=on"]
                            + nic_pci + tar_drive, None, None, dict(http_port=port, tar_dev="vda")),
        "x86_64-disk-virtio": (X86 + ["-drive", f"file={x}/disk.img,format=raw,if=virtio,snapshot=on"]
                               + nic_pci + tar_drive, None, None, dict(http_port=port, tar_dev="vdb")),
        "arm64-booti-fdtcontroladdr": (
            ARM64 + tftp_net(a64),
            UBOOT_NET + ["tftp ${kernel_addr_r} Image", "tftp ${ramdisk_addr_r} initrd.cpio.gz",
                         f"setenv bootargs {ARM_APPEND}"],
            "booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}",
            dict(http_port=port)),
        "arm64-booti-tftp-dtb": (
            ARM64 + tftp_net(a64),
            UBOOT_NET + ["setenv fdt_addr_r 0x43000000", "tftp ${kernel_addr_r} Image",
                         "tftp ${ramdisk_addr_r} initrd.u-boot", "tftp ${fdt_addr_r} virt.dtb",
                         f"setenv bootargs {ARM_APPEND}"],
            "booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdt_addr_r}",
            dict(http_port=port)),
        "arm-bootz": (
            ARM + tftp_net(a32),
            UBOOT_NET + ["tftp ${kernel_addr_r} zImage", "tftp ${ramdisk_addr_r} initrd.cpio.gz",
                         f"setenv bootargs {ARM_APPEND}"],
            "bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}",
            dict(http_port=port)),
        "arm-bootz-tftp-dtb": (
            ARM + tftp_net(a32),
            UBOOT_NET + ["setenv fdt_addr_r 0x43000000", "tftp ${kernel_addr_r} zImage",
                         "tftp ${ramdisk_addr_r} initrd.u-boot", "tftp ${fdt_addr_r} virt.dtb",
                         f"setenv bootargs {ARM_APPEND}"],
            "bootz ${kernel_addr_r} ${ramdisk_addr_r} ${fdt_addr_r}",
            dict(http_port=port)),
        "arm-bootm": (
            ARM + tftp_net(a32),
            UBOOT_NET + ["tftp ${kernel_addr_r} uImage", "tftp ${ramdisk_addr_r} initrd.u-boot",
                         f"setenv bootargs {ARM_APPEND}"],
            "bootm ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}",
            dict(http_port=port)),
    }
    if args.nfs:
        checks["x86_64-nfsroot"] = (
            X86 + ["-kernel", f"{x}/vmlinux", "-initrd", f"{x}/initrd.cpio.gz",
                   "-append", X86_APPEND + " lava_nfsroot=10.0.2.2:/x86_64"] + nic_pci,
            None, None, dict(http_port=port, nfs=True))
        checks["x86_64-nfsroot-std"] = (
            X86 + ["-kernel", f"{x}/vmlinux", "-initrd", f"{x}/initrd.cpio.gz",
                   "-append", X86_APPEND + " root=/dev/nfs nfsroot=10.0.2.2:/x86_64,rw"] + nic_pci,
            None, None, dict(nfs=True))
        checks["arm64-nfsroot"] = (
            ARM64 + tftp_net(a64),
            UBOOT_NET + ["tftp ${kernel_addr_r} Image", "tftp ${ramdisk_addr_r} initrd.u-boot",
                         f"setenv bootargs {ARM_APPEND} lava_nfsroot=10.0.2.2:/arm64"],
            "booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}",
            dict(http_port=port, nfs=True))
        checks["arm-nfsroot"] = (
            ARM + tftp_net(a32),
            UBOOT_NET + ["tftp ${kernel_addr_r} zImage", "tftp ${ramdisk_addr_r} initrd.u-boot",
                         f"setenv bootargs {ARM_APPEND} lava_nfsroot=10.0.2.2:/arm"],
            "bootz ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}",
            dict(nfs=True))
    if args.only:
        unknown = set(args.only) - set(checks)
        if unknown:
            ap.error(f"unknown checks {sorted(unknown)}; known: {sorted(checks)}")
        checks = {k: v for k, v in checks.items() if k in args.only}

    ganesha = None
    results = []
    try:
        if args.nfs and any(k.endswith(("nfsroot", "nfsroot-std")) for k in checks):
            ganesha = start_ganesha(img, work)
        for name, (argv, ucmds, boot, kw) in checks.items():
            b = Board(name, argv, logdir, args.timeout)
            try:
                if ucmds is not None:
                    b.uboot(ucmds, boot)
                b.wait_shell()
                common_checks(b, **kw)
                ok, err = True, ""
            except CheckFailed as e:
                ok, err = False, str(e)
            finally:
                b.close()
            results.append((name, ok, b.facts, err))
            status = "ok  " if ok else "FAIL"
            print(f"{status} {name:28s} prompt {b.facts.get('prompt_s', '-')} s"
                  + (f" (u-boot prompt {b.facts['uboot_prompt_s']} s)" if "uboot_prompt_s" in b.facts else "")
                  + (f"  {err}" if err else ""), flush=True)
            for k in ("kernel", "modules", "tar_device", "block_devices", "http", "nfs_root"):
                if k in b.facts:
                    print(f"       {k}: {b.facts[k]}", flush=True)
    finally:
        srv.shutdown()
        if ganesha is not None:
            ganesha.kill()
            ganesha.wait()
        if args.keep or not all(ok for _, ok, _, _ in results):
            print(f"logs in {logdir}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, ok, _, _ in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
