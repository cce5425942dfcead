"""Lab administration from the shell: users, tokens, the database.

    users add NAME [--admin]          users list
    tokens add NAME [--description D] tokens list NAME      tokens delete NAME ID
    tokens add-remote NAME TOKEN      tokens list-remote NAME   tokens delete-remote NAME TOKEN
    db upgrade                        db purge [--days N]

``tokens add-remote`` reads the remote token's secret from standard input
(one line): a secret the lab sends when a job's notify callback names TOKEN.

Each group is a function taking its argv (``users(["add", "alice"])``) and
returning the exit code, for ``lava-dispatch users ...`` to call; ``main``
takes the group too (``python -m server.admin_cli users add alice``). Nothing
prompts. ``tokens add`` prints the new secret as the last word of its
output, the only time it is shown. Exit codes: 0 done, 1 refused (a user
that exists or does not, an unknown token), 2 usage, 4 database unreachable.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

PROG = "lava-dispatch"
Command = Callable[[Sequence[str]], int]


def _exit_code(command: Command) -> Command:
    """Usage errors and an unreachable database become exit codes (2, 4), not exceptions."""

    @functools.wraps(command)
    def run(argv: Sequence[str]) -> int:
        from sqlalchemy.exc import OperationalError

        try:
            return command(argv)
        except SystemExit as exit_:  # argparse: a usage error is 2, --help is 0
            return exit_.code if isinstance(exit_.code, int) else 2
        except OperationalError as error:
            from server.db import database_url, display_url

            print(f"{PROG}: the database {display_url(database_url())} cannot be used: {error.orig}",
                  file=sys.stderr)
            return 4

    return run


def _parser(group: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:  # type: ignore[type-arg]
    parser = argparse.ArgumentParser(prog=f"{PROG} {group}")
    return parser, parser.add_subparsers(dest="command", required=True)


def _refused(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


@_exit_code
def users(argv: Sequence[str]) -> int:
    """``users add NAME [--admin]``, ``users list``."""
    parser, sub = _parser("users")
    add = sub.add_parser("add", help="create a user (no password: the user works with tokens)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage the lab")
    sub.add_parser("list", help="every user")
    args = parser.parse_args(list(argv))

    from server import auth

    if args.command == "add":
        try:
            user = auth.add_user(args.name, admin=args.admin)
        except ValueError as error:  # UserExists is one
            return _refused(str(error))
        print(f"user {user.username} added{' (admin)' if user.is_admin else ''}")
        return 0
    rows = [(u.username, "yes" if u.is_admin else "no", u.created.strftime("%Y-%m-%d %H:%M:%S"))
            for u in auth.list_users()]
    _table(("NAME", "ADMIN", "CREATED"), rows)
    return 0


@_exit_code
def tokens(argv: Sequence[str]) -> int:
    """``tokens add NAME [--description D]``, ``tokens list NAME``, ``tokens delete NAME ID``."""
    parser, sub = _parser("tokens")
    add = sub.add_parser("add", help="make a token; its secret is printed once, last")
    add.add_argument("name")
    add.add_argument("--description", default="")
    listing = sub.add_parser("list", help="a user's tokens (never their secrets)")
    listing.add_argument("name")
    remove = sub.add_parser("delete", help="revoke a token")
    remove.add_argument("name")
    remove.add_argument("id", type=int)
    remote = sub.add_parser("add-remote", help="store a secret a notify callback sends (read from stdin)")
    remote.add_argument("name")
    remote.add_argument("token", help="the name a job's notify callback gives as its token")
    listing = sub.add_parser("list-remote", help="a user's remote tokens (names only)")
    listing.add_argument("name")
    remove = sub.add_parser("delete-remote", help="forget a remote token")
    remove.add_argument("name")
    remove.add_argument("token")
    args = parser.parse_args(list(argv))

    from server import auth

    try:
        if args.command == "add":
            secret = auth.add_token(args.name, args.description)
            print(f"token for {args.name} added; store it now, it is not shown again:")
            print(secret)
        elif args.command == "list":
            rows = [(str(t.id), t.created.strftime("%Y-%m-%d %H:%M:%S"), t.description)
                    for t in auth.list_tokens(args.name)]
            _table(("ID", "CREATED", "DESCRIPTION"), rows)
        elif args.command == "add-remote":
            try:
                auth.add_remote_token(args.name, args.token, sys.stdin.readline().rstrip("\r\n"))
            except ValueError as error:
                return _refused(str(error))
            print(f"remote token {args.token} of {args.name} stored")
        elif args.command == "list-remote":
            remote = [(t.name, t.created.strftime("%Y-%m-%d %H:%M:%S")) for t in auth.list_remote_tokens(args.name)]
            _table(("NAME", "CREATED"), remote)
        elif args.command == "delete-remote":
            if not auth.delete_remote_token(args.name, args.token):
                return _refused(f"{args.name} has no remote token {args.token}")
            print(f"remote token {args.token} of {args.name} deleted")
        elif not auth.delete_token(args.name, args.id):
            return _refused(f"{args.name} has no token {args.id}")
        else:
            print(f"token {args.id} of {args.name} deleted")
    except auth.UnknownUser as error:
        return _refused(str(error.args[0]))
    return 0


@_exit_code
def db(argv: Sequence[str]) -> int:
    """``db upgrade`` (create or migrate the schema), ``db purge [--days N]`` (apply the retention)."""
    parser, sub = _parser("db")
    sub.add_parser("upgrade", help="create the schema, or migrate it to this version's")
    purge = sub.add_parser("purge", help="delete finished jobs older than the retention")
    purge.add_argument("--days", type=float, help="instead of LAVA_DISPATCH_RETENTION_DAYS (365)")
    args = parser.parse_args(list(argv))

    from server import db as database

    engine = database.get_engine()  # upgrades on first use
    if args.command == "upgrade":
        print(f"{database.display_url(engine)}: schema at revision {database.current_revision(engine)}")
        return 0
    from server.archive import purge as purge_jobs

    count = purge_jobs(days=args.days, engine=engine)
    print(f"{count} finished job{'' if count == 1 else 's'} purged")
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


GROUPS: dict[str, Command] = {"users": users, "tokens": tokens, "db": db}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in GROUPS:
        print(f"usage: python -m server.admin_cli {{{','.join(GROUPS)}}} ...", file=sys.stderr)
        return 2
    return GROUPS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
