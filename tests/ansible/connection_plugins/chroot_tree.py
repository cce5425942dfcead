# ruff: noqa: E402 - Ansible plugins document themselves before their imports
# A connection to a Debian tree on the controller, through chroot(8): what the deployment test
# reaches its target with (community.general's chroot plugin does the same; ansible-core alone
# has none). The controller runs as root; the host's path to the tree is the inventory host's
# ansible_host. Commands get a login-like environment (PATH, HOME, LANG), not the controller's.
from __future__ import annotations

DOCUMENTATION = """
    name: chroot_tree
    short_description: run tasks inside a directory tree with chroot(8)
    description:
        - Runs every command as root inside a tree on the controller, files are streamed in and out
          with dd inside the tree (so a symbolic link in the tree never resolves on the controller).
    author: lava-dispatch
    options:
      remote_addr:
        description: the tree's path on the controller
        default: inventory_hostname
        vars:
          - name: inventory_hostname
          - name: ansible_host
      executable:
        description: the shell commands run with, inside the tree
        default: /bin/sh
        vars:
          - name: ansible_executable
    extends_documentation_fragment:
        - connection_pipelining
"""

import os
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh"}


class Connection(ConnectionBase):
    transport = "chroot_tree"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tree = ""

    def _connect(self):
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("chroot_tree needs a controller running as root")
        tree = os.path.abspath(self.get_option("remote_addr"))
        if not os.path.isfile(os.path.join(tree, "bin", "sh")):
            raise AnsibleConnectionFailure(f"{tree} is not a tree with /bin/sh")
        self.tree = tree
        if not self._connected:
            display.vvv(f"ESTABLISH CHROOT_TREE CONNECTION TO {tree}", host=tree)
            self._connected = True
        return self

    def _chroot(self, argv, **kwargs):
        return subprocess.run(["chroot", self.tree, *argv], env=ENVIRONMENT, cwd="/", check=False, **kwargs)

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self.tree)
        kwargs = {"input": in_data} if in_data is not None else {"stdin": subprocess.DEVNULL}
        result = self._chroot([self.get_option("executable"), "-c", cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, **kwargs)
        return result.returncode, result.stdout, result.stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.tree)
        try:
            with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
                result = self._chroot(["dd", f"of={out_path}", "bs=65536", "status=none"], stdin=source,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as error:
            raise AnsibleError(f"cannot read {in_path}: {error}") from error
        if result.returncode != 0:
            raise AnsibleError(f"cannot write {out_path} in {self.tree}: {result.stderr.decode(errors='replace')}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.tree)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as target:
            result = self._chroot(["dd", f"if={in_path}", "bs=65536", "status=none"], stdout=target,
                                  stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise AnsibleError(f"cannot read {in_path} in {self.tree}: {result.stderr.decode(errors='replace')}")

    def close(self):
        self._connected = False
