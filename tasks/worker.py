"""Board workers: ``lava-dispatch worker --device DEVICE.yaml [--name BOARD]``.

``run_worker`` starts the supervisor (``tasks.supervisor``); the supervisor
starts ``python -m tasks.worker``, the board's Celery worker process, whose
runtime is ``tasks.board`` and whose tasks are ``tasks.celery_tasks``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import LavaError
from tasks import board
from tasks.board import BoardRuntime
from tasks.keys import SUBMIT_QUEUE, board_queue
from tasks.supervisor import EXIT_CONFIG, Supervisor, default_board_name, run_worker


def child_main(argv: list[str] | None = None) -> int:
    """The board's Celery worker process (started by the supervisor)."""
    parser = argparse.ArgumentParser(prog="lava-dispatch worker (board process)")
    parser.add_argument("--device", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    try:
        rt = BoardRuntime(args.name, Path(args.device))
    except (OSError, LavaError, ValueError) as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - ProblemList from the device file
        print(f"lava-dispatch worker: {args.device}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    board.install(rt)
    from tasks.app import app

    board.install_celery_hooks(rt)
    try:
        rt.startup()
    except SystemExit as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    queues = f"{board_queue(rt.board)},{SUBMIT_QUEUE}"
    try:
        app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", queues,
                         "--hostname", rt.node, "--without-mingle", "--without-gossip", "--task-events",
                         "--loglevel", args.loglevel])
    finally:
        rt.shutdown()
    return 0


__all__ = ["child_main", "run_worker", "Supervisor", "default_board_name", "EXIT_CONFIG"]

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
