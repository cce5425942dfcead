"""The Ansible deployment (deploy/ansible), linted, and applied for real to two Debian 12 trees.

``test_site_playbook_deploys_a_lab`` runs ``site.yml`` from this host (the controller) against two
fresh copies of a cached debootstrapped bookworm tree, reached with chroot (the connection plugin in
tests/ansible): ``lab-server`` (groups redis and servers) and ``lab-worker`` (group workers, two
boards: local01, a local shell, and bbb01, a u-boot board behind ser2net and a PDU with TFTP and an
NFS root). The roles install Debian's packages from the mirror, lava-dispatch from the wheel the
playbook builds here and its dependencies from PyPI into /opt/lava-dispatch. systemd is not PID 1
in a tree, so units are checked statically (systemd-analyze verify, their text, the enabled links)
and then run the way their unit says (tests/ansible/target.py): Redis with the role's TLS, ACL user
and AOF settings, ser2net with the role's configuration, the board worker as user lava with
lab.env; a job submitted from this host with ``lava-dispatch submit --wait`` must be Complete. A
second run with ``--limit workers`` that changes local01's device file must change nothing else
and restart local01's worker only (its handler is notified for local01 alone).

The first run builds the tree (debootstrap, about a minute, cached in
~/.cache/lava-dispatch/ansible-target with apt's and pip's downloads).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lab_helpers import ROOT, free_port, wait_for

ANSIBLE_DIR = ROOT / "deploy" / "ansible"
HELPERS = ROOT / "tests" / "ansible"
sys.path.insert(0, str(HELPERS))

from target import Target, Unit, processes_in  # noqa: E402

needs_ansible = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-core is not installed")
needs_root_tools = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("debootstrap") is None,
                                      reason="needs root and debootstrap (bash deploy/install-deps.sh)")


def ansible_env(record: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "ANSIBLE_CONNECTION_PLUGINS": str(HELPERS / "connection_plugins"),
           "ANSIBLE_CALLBACK_PLUGINS": str(HELPERS / "callback_plugins"), "ANSIBLE_PIPELINING": "true",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "false",
           "ANSIBLE_LOCAL_TEMP": str(Path(os.environ.get("TMPDIR", "/tmp")) / "ansible-local"),
           "ANSIBLE_RETRY_FILES_ENABLED": "false"}
    if record is not None:
        env.update({"ANSIBLE_CALLBACKS_ENABLED": "task_record", "TASK_RECORD_FILE": str(record)})
    return env


# ---------------------------------------------------------------- static: lint, syntax, the unit


@needs_ansible
def test_roles_pass_ansible_lint_production_profile():
    if shutil.which("ansible-lint") is None:
        pytest.skip("ansible-lint is not installed")
    result = subprocess.run(["ansible-lint", "--offline", "--nocolor", "--profile", "production"], cwd=ANSIBLE_DIR,
                            capture_output=True, text=True, timeout=300, env=ansible_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@needs_ansible
def test_example_inventory_and_site_playbook_parse():
    result = subprocess.run(["ansible-playbook", "-i", "inventory.example.yml", "site.yml", "--syntax-check"],
                            cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=120, env=ansible_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    listed = subprocess.run(["ansible-inventory", "-i", "inventory.example.yml", "--list"], cwd=ANSIBLE_DIR,
                            capture_output=True, text=True, timeout=120, env=ansible_env())
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)
    assert {"redis", "servers", "workers"} <= set(groups)


def _service_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_role_worker_unit_is_deploy_systemd_unit_with_the_venv():
    """deploy/systemd's unit (installed by hand, lava-dispatch on the PATH) and the role's stay one unit."""
    import jinja2

    template = (ANSIBLE_DIR / "roles/worker/templates/lava-dispatch-worker@.service.j2").read_text()
    rendered = jinja2.Template(template, keep_trailing_newline=True).render(
        ansible_managed="managed", lava_dispatch_user="lava", lava_dispatch_group="lava",
        lava_dispatch_config_dir="/etc/lava-dispatch", lava_dispatch_venv="/usr/local")
    by_hand = (ROOT / "deploy/systemd/lava-dispatch-worker@.service").read_text()
    assert _service_lines(rendered) == _service_lines(by_hand)
    for line in ("Delegate=yes", "KillMode=mixed", "EnvironmentFile=-/etc/lava-dispatch/lab.env"):
        assert line in _service_lines(by_hand)


# ---------------------------------------------------------------- applied to Debian trees


def host_pip_cert() -> str | None:
    """The CA bundle this host's pip trusts (PIP_CERT or pip's configuration), when it names one."""
    if os.environ.get("PIP_CERT"):
        return os.environ["PIP_CERT"]
    result = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True,
                            text=True)
    value = result.stdout.strip()
    return value if result.returncode == 0 and value and Path(value).is_file() else None


def write_inventory(base: Path, server: Target, worker: Target, ports: dict[str, int], password: str,
                    local_device: Path) -> Path:
    extra_pip = ""
    cert = host_pip_cert()
    if cert:
        # This host reaches PyPI through a proxy with its own CA: the trees' pip gets the same trust.
        for target in (server, worker):
            inside = target.path("/usr/local/share/ca-certificates/controller-bundle.pem")
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cert, inside)
        extra_pip = "--cert /usr/local/share/ca-certificates/controller-bundle.pem"
    inventory = {"all": {
        "vars": {
            "ansible_connection": "chroot_tree", "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "lava_dispatch_manage_services": False,
            "lava_dispatch_redis_password": password,
            "lava_dispatch_redis_host": "127.0.0.1",
            "lava_dispatch_redis_port": ports["redis"],
            "lava_dispatch_tls_generate": True,
            "lava_dispatch_pki_dir": str(base / "pki"),
            "lava_dispatch_wheel_dir": str(base / "dist"),
            "lava_dispatch_pip_extra_args": extra_pip,
            "server_listen": f"127.0.0.1:{ports['server']}",
            "worker_pdus": {"pdu01": {"driver": "localcmdline", "cmd_on": "echo '%s on' >> /tmp/pdu",
                                      "cmd_off": "echo '%s off' >> /tmp/pdu"}},
        },
        "children": {
            "redis": {"hosts": {"lab-server": None}},
            "servers": {"hosts": {"lab-server": None}},
            "workers": {"hosts": {"lab-worker": {"boards": [
                {"name": "local01", "device_src": str(local_device)},
                {"name": "bbb01", "device_template": str(ANSIBLE_DIR / "examples/devices/beaglebone-black.yaml.j2"),
                 "ser2net": {"port": ports["ser2net"], "device": "/dev/ttyUSB0"}, "pdu": {"name": "pdu01", "port": 5},
                 "tftp": True, "nfs": "kernel", "user": "root", "groups": ["dialout"],
                 "env": {"LAVA_DISPATCH_FILE_ROOTS": "/srv/lava/images"}},
            ]}}},
        },
        "hosts": {"lab-server": {"ansible_host": str(server.tree)}, "lab-worker": {"ansible_host": str(worker.tree)}},
    }}
    path = base / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def play(base: Path, inventory: Path, name: str, *args: str) -> list[dict]:
    """Run site.yml; return its task records (one per task and host). Fails the test if the play fails."""
    record = base / f"{name}.jsonl"
    log = base / f"{name}.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        result = subprocess.run(["ansible-playbook", "-i", str(inventory), "site.yml", "--diff", *args],
                                cwd=ANSIBLE_DIR, stdout=handle, stderr=subprocess.STDOUT, timeout=900,
                                env=ansible_env(record))
    print(f"ansible-playbook {name}: {time.monotonic() - started:.1f} s")
    text = log.read_text()
    assert result.returncode == 0, f"ansible-playbook {name} failed:\n{text[-6000:]}"
    return [json.loads(line) for line in record.read_text().splitlines()]


def unit_text(target: Target, name: str) -> list[str]:
    return _service_lines(target.path(f"/etc/systemd/system/{name}").read_text())


def check_files(server: Target, worker: Target, ports: dict[str, int], password: str, local_device: Path) -> None:
    """What the roles wrote, as files."""
    # Redis: the database settings, read last; the password only as its digest.
    conf = server.path("/etc/redis/lava-dispatch.conf").read_text()
    for line in ("appendonly yes", "maxmemory-policy noeviction", "user default off", "port 0",
                 f"tls-port {ports['redis']}", "tls-cert-file /etc/redis/tls/server.pem"):
        assert line in conf.splitlines(), line
    assert password not in conf
    assert server.path("/etc/redis/redis.conf").read_text().rstrip().endswith("include /etc/redis/lava-dispatch.conf")
    assert oct(server.path("/etc/redis/tls/server.key").stat().st_mode & 0o777) == "0o640"

    # The shared settings: the URL (password URL-encoded) and the CA; readable by group lava only.
    for target in (server, worker):
        env = target.path("/etc/lava-dispatch/lab.env")
        assert oct(env.stat().st_mode & 0o777) == "0o640"
        lines = env.read_text().splitlines()
        assert "LAVA_DISPATCH_REDIS_CA=/etc/lava-dispatch/redis-ca.pem" in lines
        url = next(line.split("=", 1)[1] for line in lines if line.startswith("LAVA_DISPATCH_REDIS_URL="))
        assert url.startswith("rediss://lava:") and url.endswith(f"@127.0.0.1:{ports['redis']}/0")
        assert target.path("/opt/lava-dispatch/bin/lava-dispatch").is_file()

    # The server: its unit, its database, the archive's schema made by the role.
    server_unit = unit_text(server, "lava-dispatch-server.service")
    assert (f"ExecStart=/opt/lava-dispatch/bin/lava-dispatch server --listen 127.0.0.1:{ports['server']}"
            in server_unit)
    assert "EnvironmentFile=/etc/lava-dispatch/server.env" in server_unit
    assert ("LAVA_DISPATCH_DATABASE_URL=sqlite:////var/lib/lava-dispatch/server/lab.sqlite3"
            in server.path("/etc/lava-dispatch/server.env").read_text().splitlines())
    database = server.path("/var/lib/lava-dispatch/server/lab.sqlite3")
    assert database.is_file() and database.stat().st_uid == server.ids("lava", None)[0]

    # The workers: one unit, a device file, settings and a drop-in per board.
    worker_unit = unit_text(worker, "lava-dispatch-worker@.service")
    for line in ("Delegate=yes", "KillMode=mixed", "User=lava", "EnvironmentFile=-/etc/lava-dispatch/lab.env",
                 "ExecStart=/opt/lava-dispatch/bin/lava-dispatch worker --device /etc/lava-dispatch/devices/%i.yaml"
                 " --name %i"):
        assert line in worker_unit, line
    assert worker.path("/etc/lava-dispatch/devices/local01.yaml").read_text() == local_device.read_text()
    bbb01 = yaml.safe_load(worker.path("/etc/lava-dispatch/devices/bbb01.yaml").read_text())
    assert bbb01["commands"]["connect"] == f"telnet 127.0.0.1 {ports['ser2net']}"
    assert "hostname=pdu01&port=5" in bbb01["commands"]["power_on"]
    assert bbb01["actions"]["deploy"]["methods"]["tftp"]["parameters"] == {"tftp_root": "/srv/tftp",
                                                                             "nfs_root": "/srv/nfs"}
    dropin = unit_text(worker, "lava-dispatch-worker@bbb01.service.d/board.conf")
    assert dropin == ["[Service]", "User=root", "Group=root", "StateDirectory=", "SupplementaryGroups=dialout"]
    assert unit_text(worker, "lava-dispatch-worker@local01.service.d/board.conf") == ["[Service]"]
    assert ("LAVA_DISPATCH_FILE_ROOTS=/srv/lava/images"
            in worker.path("/etc/lava-dispatch/boards/bbb01.env").read_text().splitlines())
    wants = worker.path("/etc/systemd/system/multi-user.target.wants")
    for board in ("local01", "bbb01"):
        assert os.readlink(wants / f"lava-dispatch-worker@{board}.service") == \
            "/etc/systemd/system/lava-dispatch-worker@.service"
    assert (server.path("/etc/systemd/system/multi-user.target.wants") / "lava-dispatch-server.service").is_symlink()
    assert (server.path("/etc/systemd/system/multi-user.target.wants") / "redis-server.service").is_symlink()

    # ser2net, pdudaemon, TFTP and NFS for bbb01, on the worker host only.
    ser2net = yaml.safe_load(worker.path("/etc/ser2net.yaml").read_text().replace("%YAML 1.1\n", ""))
    assert ser2net["connection"]["accepter"] == f"telnet(rfc2217),tcp,127.0.0.1,{ports['ser2net']}"
    assert ser2net["connection"]["connector"] == "serialdev,/dev/ttyUSB0,115200n81,local"
    pdudaemon = json.loads(worker.path("/etc/pdudaemon/pdudaemon.conf").read_text())
    assert list(pdudaemon["pdus"]) == ["pdu01"] and pdudaemon["daemon"]["listener"] == "http"
    assert 'TFTP_DIRECTORY="/srv/tftp"' in worker.path("/etc/default/tftpd-hpa").read_text().splitlines()
    assert worker.path("/srv/tftp").stat().st_uid == worker.ids("lava", None)[0]
    assert "/srv/nfs *(rw,no_root_squash,no_all_squash,async,no_subtree_check)" in \
        worker.path("/etc/exports.d/lava-dispatch.exports").read_text().splitlines()
    assert not server.path("/etc/ser2net.yaml").exists() or "lava-dispatch" not in \
        server.path("/etc/ser2net.yaml").read_text()
    assert not worker.path("/etc/redis").exists()


def check_units_verify(server: Target, worker: Target) -> None:
    """systemd-analyze verify (from the host, --root=tree): every key known, ExecStart executable in the tree."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze is not installed: units not verified")
        return
    for target, units in ((worker, ["lava-dispatch-worker@local01.service", "lava-dispatch-worker@bbb01.service"]),
                          (server, ["lava-dispatch-server.service"])):
        result = subprocess.run([analyze, "verify", f"--root={target.tree}", *units], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


def board_idle(redis_env: dict[str, str], board: str) -> bool:
    result = subprocess.run([sys.executable, "-m", "tasks.cli", "devices"], capture_output=True, text=True,
                            env=redis_env, cwd=ROOT, timeout=30)
    # BOARD TYPE HEALTH STATE ...: a Good board that is idle
    return result.returncode == 0 and any(line.split()[:4] == [board, "local-shell", "Good", "idle"]
                                          for line in result.stdout.splitlines())


@pytest.mark.lab
@needs_ansible
@needs_root_tools
def test_site_playbook_deploys_a_lab(tmp_path, no_leftovers):
    started = time.monotonic()
    ports = {"redis": free_port(), "server": free_port(), "ser2net": free_port()}
    password = "pw/" + secrets.token_urlsafe(12) + " @:"  # characters the URL must encode
    local_device = tmp_path / "local01.yaml"
    shutil.copyfile(ROOT / "sample_jobs/devices/local01.yaml", local_device)
    logs = tmp_path / "logs"
    logs.mkdir()
    job = None
    job_status = ""
    with Target(tmp_path / "lab-server") as server, Target(tmp_path / "lab-worker") as worker:
        print(f"trees ready: {time.monotonic() - started:.1f} s")
        inventory = write_inventory(tmp_path, server, worker, ports, password, local_device)

        first = play(tmp_path, inventory, "first")
        assert {r["host"] for r in first} >= {"lab-server", "lab-worker"}
        check_files(server, worker, ports, password, local_device)
        check_units_verify(server, worker)
        helped = worker.chroot("/opt/lava-dispatch/bin/lava-dispatch", "--help")
        assert helped.returncode == 0 and "worker" in helped.stdout, helped.stdout + helped.stderr

        # ser2net as its unit says, with the role's configuration: bbb01's console port answers
        # (and tells that its serial device, absent here, cannot be opened).
        ser2net = Unit(worker, "ser2net.service").start(logs / "ser2net.log")
        try:
            def console() -> bytes:
                said = b""
                with socket.create_connection(("127.0.0.1", ports["ser2net"]), 2) as connection:
                    connection.settimeout(5)
                    while b"\r\n" not in said and (chunk := connection.recv(4096)):
                        said += chunk
                return said
            assert b"Device open failure" in wait_for(console, 20, "ser2net on bbb01's port")
        finally:
            stop(ser2net, 10)

        # Redis as its unit says, with the role's settings (TLS only, ACL user, AOF).
        redis = Unit(server, "redis-server.service").start(logs / "redis.log")
        worker_process = None
        try:
            url = next(line.split("=", 1)[1] for line in
                       worker.path("/etc/lava-dispatch/lab.env").read_text().splitlines()
                       if line.startswith("LAVA_DISPATCH_REDIS_URL="))
            redis_env = {**os.environ, "LAVA_DISPATCH_REDIS_URL": url, "PYTHONPATH": str(ROOT),
                         "LAVA_DISPATCH_REDIS_CA": str(worker.path("/etc/lava-dispatch/redis-ca.pem"))}

            def answers() -> bool:
                probe = subprocess.run([sys.executable, "-c", "from tasks.config import redis_client; "
                                        "import os; print(redis_client(os.environ['LAVA_DISPATCH_REDIS_URL'], "
                                        "socket_timeout=2, retry=None).ping())"],
                                       env=redis_env, capture_output=True, text=True, cwd=ROOT, timeout=30)
                return probe.stdout.strip() == "True"

            wait_for(answers, 30, "the deployed Redis (TLS, ACL user)", interval=0.5)
            assert server.path("/var/lib/redis/appendonlydir").is_dir()  # AOF on

            # The lab server as its unit says, once the package has a `server` command: it listens.
            if server.chroot("/opt/lava-dispatch/bin/lava-dispatch", "server", "--help").returncode == 0:
                lab_server = Unit(server, "lava-dispatch-server.service").start(logs / "server.log")
                try:
                    wait_for(lambda: lab_server.poll() is None and socket.create_connection(
                        ("127.0.0.1", ports["server"]), 1).close() is None, 60, "the lab server's port", interval=0.5)
                finally:
                    assert stop(lab_server, 60) == 0, (logs / "server.log").read_text()[-3000:]
            else:
                print("lava-dispatch has no server command yet: the server's unit is checked, not run")

            # The board worker, as lava-dispatch-worker@local01.service says.
            unit = Unit(worker, "lava-dispatch-worker@local01.service")
            worker_process = unit.start(logs / "worker-local01.log")
            wait_for(lambda: worker_process.poll() is None and board_idle(redis_env, "local01"), 90,
                     "board local01 idle", interval=0.5)
            job = subprocess.run([sys.executable, "-m", "tasks.cli", "submit",
                                  str(ROOT / "sample_jobs/local-inline.yaml"), "--wait"],
                                 capture_output=True, text=True, env=redis_env, cwd=ROOT, timeout=180)
            print(f"job: exit {job.returncode}: {job.stdout.strip()} {job.stderr.strip()[-500:]}")
            job_id = job.stdout.split()[0] if job.stdout.split() else ""
            job_status = subprocess.run([sys.executable, "-m", "tasks.cli", "status", job_id], capture_output=True,
                                        text=True, env=redis_env, cwd=ROOT, timeout=30).stdout
            assert stop(worker_process, 60) == 0, (logs / "worker-local01.log").read_text()[-3000:]
        finally:
            if worker_process is not None:
                stop(worker_process, 60)
            stop(redis, 20)
        wait_for(lambda: not processes_in(worker.tree) and not processes_in(server.tree), 15,
                 "the trees' processes to end")

        # A second run, for the workers only, that changes local01's device file: nothing else
        # changes, and local01's worker alone is restarted.
        local_device.write_text(local_device.read_text() + "tags: [deployed]\n")
        # This time the hosts get the wheel the first run built, as given (lava_dispatch_wheel): the same file.
        wheel = next((tmp_path / "dist").glob("lava_dispatch-*.whl"))
        second = play(tmp_path, inventory, "second", "--limit", "workers", "-e", f"lava_dispatch_wheel={wheel}")
        assert {r["host"] for r in second} == {"lab-worker"}
        assert {r["play"] for r in second} == {"Board workers"}
        assert not any("Python wheel" in r["task"] and r["status"] != "skipped" for r in second)
        changed = sorted({r["task"] for r in second if r["status"] == "changed"})
        assert changed == ["worker : Each board's device file", "worker : Which workers restart"], changed
        device_task = next(r for r in second if r["task"] == "worker : Each board's device file")
        assert [i["item"] for i in device_task["items"] if i["changed"]] == ["local01"]
        decision = next(r for r in second if r["task"] == "worker : Which workers restart")
        assert decision["worker_restart"] == ["local01"]
        restarts = [r for r in second if r["handler"] and r["task"] == "worker : Restart the changed workers"]
        assert len(restarts) == 1 and [i["item"] for i in restarts[0]["items"]] == ["local01"], restarts
        assert "tags: [deployed]" in worker.path("/etc/lava-dispatch/devices/local01.yaml").read_text()
    leftovers = worker.leftovers + server.leftovers
    assert not leftovers, f"processes outlived the test in the trees: {leftovers}"
    print(f"test: {time.monotonic() - started:.1f} s")

    assert job is not None
    # The deployed worker runs Debian 12's own python3 (3.11.2): its tarfile has no extraction filters.
    assert job.returncode == 0 and "Complete" in job.stdout, job.stdout + job.stderr + job_status
