"""Waiting for processes to end: the one TERM-grace-KILL loop of the project.

Both the helper process groups of a job (pipeline.processes) and whatever
its cgroup or token finds (pipeline.jobscope) are ended with ``terminate``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_until(done: Callable[[], bool], seconds: float, reap: Callable[[], None] | None = None) -> bool:
    """Poll ``done`` until it is true (True) or ``seconds`` pass (False); ``reap`` runs before each look."""
    deadline = time.monotonic() + seconds
    pause = 0.001  # most processes end within milliseconds: look often at first
    while True:
        if reap is not None:
            reap()
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def terminate(send: Callable[[int], None], alive: Callable[[], bool], grace: float = 2.0,
              kill_wait: float = 1.0, reap: Callable[[], None] | None = None) -> bool:
    """SIGTERM, up to ``grace`` s to end, then SIGKILL and up to ``kill_wait`` s; True once nothing lives.

    ``send(sig)`` signals whatever is to end, ``alive()`` says if any of it is left, ``reap()``
    collects our own children's exit status (an unreaped child still looks alive).
    """
    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        try:
            send(sig)
        except ProcessLookupError:
            pass
        if wait_until(lambda: not alive(), seconds, reap):
            return True
    return False


def stop_process_group(process: subprocess.Popen[Any], grace: float) -> bool:
    """SIGTERM to ``process`` (a session leader: it ends its own children), up to ``grace`` s, then
    SIGKILL to its whole process group; True once it ended."""
    def send(sig: int) -> None:
        if sig == signal.SIGTERM:
            process.send_signal(sig)
        else:
            os.killpg(process.pid, sig)

    return terminate(send, lambda: process.poll() is None, grace, kill_wait=10.0)
