# ruff: noqa: E402 - Ansible plugins document themselves before their imports
# Records every task's result as one JSON line in $TASK_RECORD_FILE, for the deployment test to
# read (ansible-core has no json callback of its own: that one is in ansible.posix). Each line:
# play, task, role, handler (bool), host, status (ok, changed, skipped, failed, unreachable), items
# (per loop item: item label, changed, skipped), seconds (the task's wall time on that host).
from __future__ import annotations

DOCUMENTATION = """
    name: task_record
    type: aggregate
    short_description: write each task's result as a JSON line
    description: Writes one JSON line per task and host to the file named by TASK_RECORD_FILE.
    requirements:
      - enabled with ANSIBLE_CALLBACKS_ENABLED=task_record
"""

import json
import os
import time

from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("TASK_RECORD_FILE")
        self.play = ""
        self.started: dict[str, float] = {}

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def _start(self, task):
        self.started[task._uuid] = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task)

    def _write(self, result, status):
        if not self.path:
            return
        task = result._task
        data = result._result
        items = []
        for item in data.get("results", []) if isinstance(data.get("results"), list) else []:
            if not isinstance(item, dict):
                continue
            label = item.get("_ansible_item_label", item.get("item"))
            items.append({"item": label if isinstance(label, (str, int, float, bool)) or label is None else str(label),
                          "changed": bool(item.get("changed")), "skipped": bool(item.get("skipped"))})
        record = {"play": self.play, "task": task.get_name(), "role": task._role.get_name() if task._role else None,
                  "handler": isinstance(task, Handler),
                  "host": result._host.get_name(), "status": status, "items": items,
                  "seconds": round(time.monotonic() - self.started.get(task._uuid, time.monotonic()), 3)}
        if status == "failed":
            record["msg"] = str(data.get("msg", ""))[:2000]
        if "ansible_facts" in data and "worker_restart" in data["ansible_facts"]:
            record["worker_restart"] = list(data["ansible_facts"]["worker_restart"])
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")
