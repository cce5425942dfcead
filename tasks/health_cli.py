"""``lava-dispatch devices show|set-health`` and ``lava-dispatch workers [set-health]``: boards' and hosts' health.

A change is made by ``Lab.set_health`` / ``Lab.set_worker_health``, the
same functions the lab server's ``scheduler.devices.update`` and REST call,
and recorded with the user running the command and the ``--reason``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import yaml

from tasks.keys import board_key

EXIT_OK, EXIT_USAGE = 0, 2


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def device_show(lab: Any, board: str) -> int:
    print(yaml.safe_dump(lab.device(board), sort_keys=False, width=120), end="")
    return EXIT_OK


def device_set_health(lab: Any, args: argparse.Namespace) -> int:
    change = lab.set_health(args.board, args.health, who=_user(), reason=args.reason or "", force=args.force)
    print(f"{change.board}: {change.old} -> {change.new}")
    if change.canceled:
        print(f"job {change.canceled} is canceled (--force)")
    if change.health_check:
        print(f"health check job {change.health_check} submitted")
    elif change.new in ("Maintenance", "Bad", "Retired") and lab.r.hget(board_key(args.board), "job"):
        print("its running job finishes first; then the board takes no jobs")
    return EXIT_OK


def workers_list(lab: Any, as_yaml: bool) -> int:
    hosts = lab.workers()
    if as_yaml:
        print(yaml.safe_dump(hosts, sort_keys=False), end="")
        return EXIT_OK
    print(f"{'HOST':28}  {'HEALTH':12}  {'BOARDS':30}  REASON")
    for h in hosts:
        print(f"{h['host']:28}  {h['health']:12}  {','.join(h['boards']) or '-':30}  {h.get('reason', '')}")
    return EXIT_OK


def worker_set_health(lab: Any, args: argparse.Namespace) -> int:
    old, canceled = lab.set_worker_health(args.host, args.health, who=_user(), reason=args.reason or "",
                                          force=args.force)
    print(f"worker {args.host}: {old} -> {args.health.capitalize()}")
    for job in canceled:
        print(f"job {job} is canceled (--force)")
    from tasks.health import pending_check

    for host in lab.workers():
        for board in host["boards"] if host["host"] == args.host else []:
            check = pending_check(lab, board)
            if check:
                print(f"{board}: health check job {check} queued or running")
    return EXIT_OK


def run(lab: Any, args: argparse.Namespace) -> int | None:
    """The health subcommands of ``devices`` and ``workers``; None: plain ``devices`` (the list)."""
    from tasks.health import HealthError

    try:
        if args.command == "workers":
            if getattr(args, "workers_command", None) == "set-health":
                return worker_set_health(lab, args)
            return workers_list(lab, args.yaml)
        which = getattr(args, "devices_command", None)
        if which == "show":
            return device_show(lab, args.board)
        if which == "set-health":
            return device_set_health(lab, args)
    except HealthError as exc:
        print(f"lava-dispatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return None


def _set_health_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--reason", help="why (kept in the health history)")
    p.add_argument("--force", action="store_true", help=f"cancel the running job{what} instead of letting it finish")


def add_device_commands(devices: argparse.ArgumentParser) -> None:
    """``devices show BOARD`` and ``devices set-health BOARD HEALTH``."""
    sub = devices.add_subparsers(dest="devices_command", metavar="{show,set-health}")
    p = sub.add_parser("show", help="a board: health (why, who, when), state, job, health check, history")
    p.add_argument("board")
    p = sub.add_parser("set-health", help="set a board's health: good, unknown, looping, bad, maintenance, retired")
    p.add_argument("board")
    p.add_argument("health", help="good, unknown, looping, bad, maintenance or retired (any case)")
    _set_health_options(p, "")


def add_worker_commands(sub: Any, func: Any) -> None:
    """``workers`` (the hosts and their health) and ``workers set-health HOST HEALTH``."""
    p = sub.add_parser("workers", help="the worker hosts: their health (Active, Maintenance, Retired) and boards")
    p.add_argument("--yaml", action="store_true")
    p.set_defaults(func=func)
    wsub = p.add_subparsers(dest="workers_command", metavar="{set-health}")
    q = wsub.add_parser("set-health", help="set a worker host's health: active, maintenance, retired")
    q.add_argument("host")
    q.add_argument("health", help="active, maintenance or retired (any case)")
    _set_health_options(q, "s of its boards")


__all__ = ["run", "add_device_commands", "add_worker_commands"]
