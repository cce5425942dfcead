"""The deployment test's target: a fresh copy of a cached Debian tree, reached with chroot.

``Target`` copies the cached bookworm tree (``target-tree.sh``) into a directory of its own, mounts
what programs in it need (``/proc``; a ``/dev`` of its own: a tmpfs with the usual nodes, a private
devpts and ``/dev/shm``) and binds two caches (apt's lists and downloaded packages, pip's) so a later run does
not download again; at the end it ends every process whose root is the tree, unmounts everything
below it and removes it.

``Unit`` reads a systemd unit (with its drop-ins) from the tree and starts its ``ExecStart`` inside
the tree the way systemd would: as its ``User``/``Group``/``SupplementaryGroups``, with a clean
environment made of ``Environment=`` then ``EnvironmentFile=`` (which wins), and its
``RuntimeDirectory``/``StateDirectory`` created for that user. What it does not do: cgroups
(``Delegate=``, ``KillMode=``), sandboxing (``PrivateTmp=``, ``ProtectSystem=``, ...),
``Restart=``; those are checked statically (``systemd-analyze verify``, the file's text).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("LAVA_DISPATCH_CACHE", Path.home() / ".cache" / "lava-dispatch")) / "ansible-target"
UNIT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cached_tree() -> Path:
    """The cached tree (built by target-tree.sh on first use)."""
    result = subprocess.run(["bash", str(HERE / "target-tree.sh")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"target-tree.sh failed: {result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    found = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point == str(path) or point.startswith(str(path) + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def processes_in(tree: Path) -> list[int]:
    """Live processes whose root directory is ``tree`` (everything started with chroot into it)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/root") != str(tree):
                continue
            with open(f"/proc/{name}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(name))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


class Target:
    def __init__(self, base: Path):
        self.base = base
        self.tree = base / "tree"
        self.leftovers: list[str] = []

    def __enter__(self) -> Target:
        source = cached_tree()
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(source), str(self.tree)], check=True)
        (self.tree / ".complete").unlink()
        try:
            self._mount()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    def _mount(self) -> None:
        tree = self.tree
        self._run("mount", "-t", "proc", "proc", str(tree / "proc"))
        dev = tree / "dev"
        self._run("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid", "dev", str(dev))
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                   ("urandom", 1, 9), ("tty", 5, 0)):
            os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir()
        self._run("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts",
                  str(dev / "pts"))
        self._run("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", str(dev / "shm"))
        os.symlink("pts/ptmx", dev / "ptmx")
        for number, name in enumerate(("stdin", "stdout", "stderr")):
            os.symlink(f"/proc/self/fd/{number}", dev / name)
        os.symlink("/proc/self/fd", dev / "fd")
        # Caches shared by the runs (outside every tree): apt's lists (a run within the hour after
        # the last one skips `apt-get update`) and the packages it downloaded, pip's wheels.
        for cache, inside in (("apt-archives", "var/cache/apt/archives"), ("apt-lists", "var/lib/apt/lists"),
                              ("pip", "root/.cache/pip")):
            (CACHE / cache / "partial").mkdir(parents=True, exist_ok=True)
            (tree / inside).mkdir(parents=True, exist_ok=True)
            self._run("mount", "--bind", str(CACHE / cache), str(tree / inside))

    def close(self) -> None:
        """End every process in the tree (noting it as a leftover), unmount, remove the copy."""
        left = processes_in(self.tree)
        if left:
            self.leftovers += [f"{pid}: {command_line(pid)}" for pid in left]
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while processes_in(self.tree) and time.monotonic() < deadline:
                time.sleep(0.05)
        for point in mounts_below(self.tree):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        if mounts_below(self.tree):
            raise RuntimeError(f"cannot unmount {mounts_below(self.tree)}: the tree is left in place")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.tree)], check=False)

    def path(self, inside: str) -> Path:
        return self.tree / inside.lstrip("/")

    def chroot(self, *argv: str, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        environment = {"PATH": UNIT_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        return subprocess.run(["chroot", str(self.tree), "/usr/bin/env", "-i",
                               *(f"{k}={v}" for k, v in environment.items()), *argv],
                              capture_output=True, text=True, timeout=timeout)

    def ids(self, user: str, group: str | None) -> tuple[int, int, str]:
        """uid, gid and home of a user of the tree (its own /etc/passwd and /etc/group)."""
        passwd = {f[0]: f for f in (line.split(":") for line in self.path("/etc/passwd").read_text().splitlines())}
        groups = {f[0]: f for f in (line.split(":") for line in self.path("/etc/group").read_text().splitlines())}
        entry = passwd[user]
        gid = int(groups[group][2]) if group else int(entry[3])
        return int(entry[2]), gid, entry[5]

    def group_id(self, name: str) -> int:
        groups = {f[0]: f for f in (line.split(":") for line in self.path("/etc/group").read_text().splitlines())}
        return int(groups[name][2])


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


class Unit:
    """A unit file of the tree (and its drop-ins), as systemd would read it for one instance."""

    def __init__(self, target: Target, name: str):
        self.target, self.name = target, name
        self.instance = name.split("@", 1)[1].rsplit(".", 1)[0] if "@" in name else ""
        template = name.split("@", 1)[0] + "@.service" if "@" in name else name
        path = next((target.path(d) / template for d in ("/etc/systemd/system", "/lib/systemd/system")
                     if (target.path(d) / template).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"no unit {template} in {target.tree}")
        self.files = [path]
        for unit_dir in {template, name}:
            dropins = target.path("/etc/systemd/system") / f"{unit_dir}.d"
            if dropins.is_dir():
                self.files += sorted(dropins.glob("*.conf"))
        self.service: dict[str, list[str]] = {}
        for file in self.files:
            section = ""
            for raw in file.read_text().splitlines():
                line = raw.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("["):
                    section = line.strip("[]")
                    continue
                key, _, value = line.partition("=")
                if section == "Service":
                    values = self.service.setdefault(key.strip(), [])
                    if value.strip() == "":
                        values.clear()  # an empty assignment resets a list
                    else:
                        values.append(self.specifiers(value.strip()))

    def specifiers(self, value: str) -> str:
        out, i = [], 0
        while i < len(value):
            if value[i] == "%" and i + 1 < len(value):
                spec = value[i + 1]
                if spec == "i":
                    out.append(self.instance)
                elif spec == "%":
                    out.append("%")
                else:
                    raise ValueError(f"{self.name}: specifier %{spec} is not emulated")
                i += 2
            else:
                out.append(value[i])
                i += 1
        return "".join(out)

    def last(self, key: str, default: str = "") -> str:
        return self.service.get(key, [default])[-1]

    def environment(self, home: str, user: str) -> dict[str, str]:
        env = {"PATH": UNIT_PATH, "LANG": "C.UTF-8", "HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/sh"}
        for value in self.service.get("Environment", []):
            for assignment in shlex.split(value):
                key, _, val = assignment.partition("=")
                env[key] = val
        for value in self.service.get("EnvironmentFile", []):
            optional = value.startswith("-")
            path = self.target.path(value.lstrip("-"))
            if not path.is_file():
                if optional:
                    continue
                raise FileNotFoundError(f"{self.name}: EnvironmentFile {value} is missing")
            for raw in path.read_text().splitlines():
                line = raw.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                key, _, val = line.partition("=")
                env[key.strip()] = _unquote(val)
        return env

    def exec_start(self, env: dict[str, str]) -> list[str]:
        [line] = self.service["ExecStart"][-1:]
        argv = shlex.split(line.lstrip("-@+!:"))
        out = []
        for word in argv:
            if word.startswith("$") and not word.startswith("${") and word[1:] in env:
                out += env[word[1:]].split()  # $VAR: split into words, as systemd does
            else:
                for key, val in env.items():
                    word = word.replace("${" + key + "}", val)
                out.append(word)
        return out

    def start(self, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ExecStart in the tree as the unit says; its output goes to ``log`` (on the host)."""
        user = self.last("User", "root")
        group = self.last("Group", "") or None
        uid, gid, home = self.target.ids(user, group)
        groups = [str(self.target.group_id(g)) for value in self.service.get("SupplementaryGroups", [])
                  for g in value.split()]
        env = {**self.environment(home, user), **(extra_env or {})}
        for key, root in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib")):
            made = []
            for value in self.service.get(key, []):
                for directory in value.split():
                    path = self.target.path(f"{root}/{directory}")
                    path.mkdir(parents=True, exist_ok=True)
                    os.chown(path, uid, gid)
                    made.append(f"{root}/{directory}")
            if made:
                env[key.upper().replace("DIRECTORY", "_DIRECTORY")] = ":".join(made)
        argv = self.exec_start(env)
        userspec = [f"--userspec={uid}:{gid}"] + ([f"--groups={','.join(groups)}"] if groups else [])
        handle = open(log, "ab")
        try:
            return subprocess.Popen(["chroot", *userspec, str(self.target.tree), "/usr/bin/env", "-i",
                                     *(f"{k}={v}" for k, v in env.items()), *argv],
                                    stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/")
        finally:
            handle.close()
