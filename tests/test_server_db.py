"""The lab database: where it is, its schema on first use, the migrations, SQLite's settings.

On SQLite and on PostgreSQL (a throw-away database per test; see
server_fixtures).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from server import db

pytest_plugins = ("server_fixtures",)  # empty_db_url: an empty SQLite and PostgreSQL database

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"jobs", "results", "log_chunks", "users", "tokens", "health_changes", "remote_tokens",
          "alembic_version"}


# ---------------------------------------------------------------- where the database is


def test_lab_dir_is_the_environment_variable_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("LAVA_DISPATCH_LAB_DIR", str(tmp_path / "lab"))
    assert db.lab_dir() == tmp_path / "lab"
    monkeypatch.delenv("LAVA_DISPATCH_DATABASE_URL", raising=False)
    assert db.database_url() == f"sqlite:///{tmp_path / 'lab' / 'lab.sqlite3'}"


def test_lab_dir_is_system_wide_for_root_and_per_user_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("LAVA_DISPATCH_LAB_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert db.lab_dir() == Path("/var/lib/lava-dispatch")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert db.lab_dir() == tmp_path / ".local" / "share" / "lava-dispatch"


def test_database_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_DATABASE_URL", "postgresql://lab:secret@db.example/lava")
    assert db.database_url() == "postgresql://lab:secret@db.example/lava"
    assert "secret" not in db.display_url(db.database_url())


def test_a_plain_postgresql_url_uses_psycopg_3():
    engine = db.make_engine("postgresql://lab@127.0.0.1:1/lava")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_the_sqlite_file_directory_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'lab.sqlite3'}"
    assert db.current_revision(db.get_engine(url)) == db.head_revision()
    assert (tmp_path / "a" / "b" / "lab.sqlite3").is_file()
    db.dispose_engines()


# ---------------------------------------------------------------- schema and migrations


def test_a_new_database_gets_the_schema_on_first_use(empty_db_url):
    raw = db.make_engine(empty_db_url)
    assert db.current_revision(raw) is None
    assert set(inspect(raw).get_table_names()) == set()
    raw.dispose()
    engine = db.get_engine(empty_db_url)
    assert set(inspect(engine).get_table_names()) == TABLES
    assert db.current_revision(engine) == db.head_revision() == "0003"


def test_the_migrations_create_exactly_what_the_models_describe(empty_db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from server.models import Base

    engine = db.make_engine(empty_db_url)
    assert db.upgrade(engine) == db.head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       Base.metadata)
    assert differences == []
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
    assert {"ix_jobs_state_number", "ix_jobs_health_number", "ix_jobs_device_type_number",
            "ix_jobs_submitter_number", "ix_jobs_number", "ix_jobs_end_time"} <= indexes
    engine.dispose()


def test_an_existing_database_keeps_its_data_when_opened_again(empty_db_url):
    from server.auth import add_user, get_user

    add_user("alice", engine=db.get_engine(empty_db_url))
    db.dispose_engines()
    engine = db.make_engine(empty_db_url)
    assert db.upgrade(engine) == "0003"  # nothing to do: already current
    assert get_user("alice", engine=engine) is not None
    engine.dispose()


def test_a_downgraded_database_is_upgraded_on_first_use(empty_db_url):
    from alembic import command

    engine = db.make_engine(empty_db_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(db.alembic_config(connection), "base")
    assert db.current_revision(engine) is None
    assert "jobs" not in inspect(engine).get_table_names()
    engine.dispose()
    assert "jobs" in inspect(db.get_engine(empty_db_url)).get_table_names()


def test_a_database_from_a_newer_version_is_refused_untouched(empty_db_url):
    engine = db.make_engine(empty_db_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(RuntimeError, match="9999.*does not know"):
        db.upgrade(engine)
    assert db.current_revision(engine) == "9999"
    engine.dispose()


def test_several_processes_may_create_the_schema_at_once(empty_db_url):
    engines = [db.make_engine(empty_db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    outcomes: list[object] = []

    def first_use(engine) -> None:
        barrier.wait()
        try:
            outcomes.append(db.upgrade(engine))
        except Exception as error:  # noqa: BLE001 - the test reports it
            outcomes.append(error)

    threads = [threading.Thread(target=first_use, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["0003"] * len(engines)
    with engines[0].connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    for engine in engines:
        engine.dispose()


# ---------------------------------------------------------------- SQLite settings


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = db.get_engine(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
    db.dispose_engines()


def test_a_failed_transaction_leaves_nothing_behind_on_sqlite(tmp_path):
    """pysqlite's legacy mode would have committed the first INSERT on its own; our BEGIN makes it atomic."""
    from server.db import session
    from server.models import User

    engine = db.get_engine(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    with pytest.raises(RuntimeError):
        with session(engine, write=True) as s:
            s.add(User(username="alice"))
            s.flush()
            raise RuntimeError("half-way")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM users").scalar_one() == 0
    db.dispose_engines()


# ---------------------------------------------------------------- the dispatcher never needs it


def test_importing_server_or_the_dispatcher_cli_loads_no_database_code():
    code = ("import sys, server, tasks.cli; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg') "
            "or m.startswith('server.')); print(loaded)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
