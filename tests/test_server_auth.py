"""Users, tokens and the admin CLI, on SQLite and on PostgreSQL.

The secret of a token must never reach the database: the tests read every
row of every table back and look for it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from server_fixtures import table_rows

from server import admin_cli, auth
from server.db import dispose_engines, get_engine

pytest_plugins = ("server_fixtures",)  # db_url, engine, lab_env: on SQLite and PostgreSQL

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- users


def test_users_are_added_once(engine):
    alice = auth.add_user("alice", engine=engine)
    auth.add_user("root@lab.example", admin=True, engine=engine)
    assert (alice.username, alice.is_admin) == ("alice", False)
    with pytest.raises(auth.UserExists, match="alice already exists"):
        auth.add_user("alice", admin=True, engine=engine)
    assert [(u.username, u.is_admin) for u in auth.list_users(engine=engine)] == [
        ("alice", False), ("root@lab.example", True)]
    assert auth.get_user("nobody", engine=engine) is None


@pytest.mark.parametrize("name", ["", "a b", "alice/..", "x" * 151, "é", "a;drop", "tab\t", "new\nline"])
def test_invalid_user_names_are_refused(engine, name):
    with pytest.raises(ValueError, match="not a valid user name"):
        auth.add_user(name, engine=engine)
    assert auth.list_users(engine=engine) == []


@pytest.mark.parametrize("name", ["a", "x" * 150, "first.last@example.org", "ci-bot+1", "under_score"])
def test_lava_like_user_names_are_accepted(engine, name):
    assert auth.add_user(name, engine=engine).username == name


# ---------------------------------------------------------------- tokens


def test_a_token_authenticates_its_user_only(engine):
    auth.add_user("alice", engine=engine)
    auth.add_user("bob", engine=engine)
    secret = auth.add_token("alice", "lavacli on my laptop", engine=engine)
    assert len(secret) == 43  # token_urlsafe(32)
    assert auth.authenticate("alice", secret, engine=engine).username == "alice"
    assert auth.user_for_token(secret, engine=engine).username == "alice"
    assert auth.authenticate("bob", secret, engine=engine) is None
    assert auth.authenticate("alice", secret[:-1] + ("A" if secret[-1] != "A" else "B"), engine=engine) is None
    assert auth.user_for_token("", engine=engine) is None
    assert auth.user_for_token("x" * 10_000, engine=engine) is None
    bob_secret = auth.add_token("bob", engine=engine)
    assert auth.authenticate("alice", bob_secret, engine=engine) is None
    assert auth.authenticate("bob", bob_secret, engine=engine).username == "bob"


def test_the_secret_is_stored_nowhere(engine):
    auth.add_user("alice", engine=engine)
    secrets = [auth.add_token("alice", f"token {n}", engine=engine) for n in range(3)]
    dump = repr(table_rows(engine))
    assert "scrypt$" in dump  # the hashes are there, so the scan did read the tokens table
    for secret in secrets:
        assert secret not in dump
        assert secret.encode() not in dump.encode()
        assert secret[:20] not in dump  # not even a prefix of it


def test_hashes_are_salted_and_checked(engine):
    one, two = auth.hash_secret("same secret"), auth.hash_secret("same secret")
    assert one != two
    assert auth.verify_secret("same secret", one) and auth.verify_secret("same secret", two)
    assert not auth.verify_secret("other secret", one)
    scheme, n, r, p, salt, digest = one.split("$")
    assert (scheme, int(n)) == ("scrypt", 2**14)
    assert not auth.verify_secret("same secret", "$".join([scheme, n, r, p, salt, digest[:-4] + "AAA="]))
    assert not auth.verify_secret("same secret", "md5$abc")


def test_tokens_are_listed_and_deleted(engine):
    auth.add_user("alice", engine=engine)
    auth.add_user("bob", engine=engine)
    first = auth.add_token("alice", "ci", engine=engine)
    second = auth.add_token("alice", "laptop", engine=engine)
    bobs = auth.add_token("bob", "bob's", engine=engine)
    tokens = auth.list_tokens("alice", engine=engine)
    assert [t.description for t in tokens] == ["ci", "laptop"]
    assert all(not hasattr(t, "secret") for t in tokens)
    bob_token = auth.list_tokens("bob", engine=engine)[0]
    assert auth.delete_token("alice", bob_token.id, engine=engine) is False  # not hers
    assert auth.user_for_token(bobs, engine=engine) is not None
    assert auth.delete_token("alice", tokens[0].id, engine=engine) is True
    assert auth.user_for_token(first, engine=engine) is None
    assert auth.user_for_token(second, engine=engine).username == "alice"
    assert [t.description for t in auth.list_tokens("alice", engine=engine)] == ["laptop"]


def test_a_verified_token_is_not_hashed_again_but_its_deletion_counts_at_once(engine, monkeypatch):
    auth.add_user("alice", engine=engine)
    secret = auth.add_token("alice", engine=engine)
    calls: list[str] = []
    real = auth.verify_secret
    monkeypatch.setattr(auth, "verify_secret", lambda secret, stored: calls.append(stored) or real(secret, stored))
    for _ in range(5):
        assert auth.authenticate("alice", secret, engine=engine).username == "alice"
    assert len(calls) == 1
    token = auth.list_tokens("alice", engine=engine)[0]
    assert auth.delete_token("alice", token.id, engine=engine)
    assert auth.authenticate("alice", secret, engine=engine) is None


def test_tokens_of_an_unknown_user_are_refused(engine):
    with pytest.raises(auth.UnknownUser):
        auth.add_token("ghost", engine=engine)
    with pytest.raises(auth.UnknownUser):
        auth.list_tokens("ghost", engine=engine)
    assert table_rows(engine)["tokens"] == []


# ---------------------------------------------------------------- the admin CLI


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = admin_cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_users_and_tokens(lab_env):
    assert cli("users", "add", "alice", "--admin") == (0, "user alice added (admin)\n", "")
    assert cli("users", "add", "bob")[0] == 0
    code, _, err = cli("users", "add", "alice")
    assert code == 1 and "alice already exists" in err
    code, out, _ = cli("users", "list")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()] == [["NAME", "ADMIN"], ["alice", "yes"], ["bob", "no"]]

    code, out, _ = cli("tokens", "add", "alice", "--description", "ci bot")
    assert code == 0
    secret = out.split()[-1]
    assert auth.authenticate("alice", secret, engine=get_engine(lab_env)).username == "alice"
    code, out, _ = cli("tokens", "list", "alice")
    assert code == 0 and "ci bot" in out and secret not in out
    token_id = out.splitlines()[1].split()[0]
    assert cli("tokens", "delete", "alice", token_id)[0] == 0
    assert auth.user_for_token(secret, engine=get_engine(lab_env)) is None
    assert cli("tokens", "delete", "alice", token_id)[0] == 1
    assert cli("tokens", "add", "ghost")[0] == 1


def test_cli_usage_errors_and_db_upgrade(lab_env):
    assert cli()[0] == 2
    assert cli("users")[0] == 2
    assert cli("users", "add")[0] == 2
    assert cli("users", "add", "bad name")[0] == 1
    code, out, _ = cli("db", "upgrade")
    from server.db import head_revision

    assert code == 0 and out.strip().endswith(f"schema at revision {head_revision()}")
    code, out, _ = cli("db", "purge", "--days", "30")
    assert (code, out) == (0, "0 finished jobs purged\n")


def test_cli_group_functions_return_exit_codes(lab_env):
    assert admin_cli.users(["add", "carol"]) == 0
    assert admin_cli.users(["frobnicate"]) == 2
    assert admin_cli.tokens(["list", "carol"]) == 0


def test_cli_database_unreachable_is_exit_4(monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:9/lab")
    code, _, err = cli("users", "list")
    assert code == 4 and "cannot be used" in err and "pw" not in err


def test_cli_runs_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAVA_DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server.admin_cli", *argv], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert run("users", "add", "alice").returncode == 0
    done = run("tokens", "add", "alice")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.split()[-1]
    engine = get_engine(env["LAVA_DISPATCH_DATABASE_URL"])
    assert auth.authenticate("alice", secret, engine=engine) is not None
    dispose_engines()


def test_remote_tokens_are_kept_as_given_and_listed_by_name(lab_env, monkeypatch):
    assert admin_cli.users(["add", "dora"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("the-secret-to-send\n"))
    assert admin_cli.tokens(["add-remote", "dora", "kernelci"]) == 0
    assert auth.remote_secret("dora", "kernelci", engine=get_engine(lab_env)) == "the-secret-to-send"
    code, out, _ = cli("tokens", "list-remote", "dora")
    assert code == 0 and "kernelci" in out and "the-secret-to-send" not in out
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert admin_cli.tokens(["add-remote", "dora", "empty"]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert admin_cli.tokens(["add-remote", "ghost", "kernelci"]) == 1
    assert admin_cli.tokens(["delete-remote", "dora", "kernelci"]) == 0
    assert auth.remote_secret("dora", "kernelci", engine=get_engine(lab_env)) is None
    assert admin_cli.tokens(["delete-remote", "dora", "kernelci"]) == 1
