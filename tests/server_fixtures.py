"""Real lab databases for the server tests: a SQLite file, and throw-away PostgreSQL databases.

The PostgreSQL server is ``LAVA_DISPATCH_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, the trust login of
a local or CI server). A test run creates its database
``lava_dispatch_test_<run>`` once, migrated, and empties it before each test
(TRUNCATE); a test about the schema itself gets an empty database of its own
(``empty_db_url``). All are dropped at the end. The PostgreSQL tests are
skipped only when nothing answers on that host and port: a server that
answers but refuses the login fails them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ADMIN_URL = os.environ.get("LAVA_DISPATCH_TEST_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RUN = secrets.token_hex(4)
BACKENDS = ("sqlite", "postgresql")
_numbers = itertools.count()


def postgres_answers() -> str | None:
    """None when the PostgreSQL server accepts TCP connections, else why not."""
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as error:
        return f"PostgreSQL does not answer on {host}:{port} ({error}); set LAVA_DISPATCH_TEST_POSTGRES_URL"
    return None


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(sql)
    admin.dispose()


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[list[str]]:
    """The names of the PostgreSQL databases this run made, all dropped at its end."""
    names: list[str] = []
    yield names
    from server.db import dispose_engines

    dispose_engines()
    for name in names:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _new_postgres_database(names: list[str], suffix: str) -> str:
    from sqlalchemy.engine import make_url

    reason = postgres_answers()
    if reason:
        pytest.skip(reason)
    name = f"lava_dispatch_test_{RUN}_{suffix}"
    _admin(f'CREATE DATABASE "{name}"')
    names.append(name)
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _postgres_run_url(_postgres_databases: list[str]) -> str:
    return _new_postgres_database(_postgres_databases, "run")


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: Any, tmp_path: Path, _postgres_databases: list[str]) -> Iterator[str]:
    """A database without any schema, once SQLite and once PostgreSQL."""
    from server.db import dispose_engines

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lab.sqlite3'}"
        dispose_engines()
        return
    name = f"empty{next(_numbers)}"
    url = _new_postgres_database(_postgres_databases, name)
    yield url
    dispose_engines()
    _admin(f'DROP DATABASE IF EXISTS "lava_dispatch_test_{RUN}_{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: Any, tmp_path: Path) -> Iterator[str]:
    """An empty lab database with its schema: a new SQLite file, or this run's PostgreSQL database emptied."""
    from server.db import dispose_engines, get_engine

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lab.sqlite3'}"
        dispose_engines()
        return
    url = request.getfixturevalue("_postgres_run_url")
    engine = get_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE jobs, results, log_chunks, users, tokens, remote_tokens, "
                                   "health_changes RESTART IDENTITY CASCADE")
    yield url


@pytest.fixture
def engine(db_url: str) -> Any:
    """The lab engine of an empty lab database."""
    from server.db import get_engine

    return get_engine(db_url)


@pytest.fixture
def lab_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database as the CLI finds it: through LAVA_DISPATCH_DATABASE_URL."""
    monkeypatch.setenv("LAVA_DISPATCH_DATABASE_URL", db_url)
    return db_url


def table_rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the lab schema (for scanning what is stored)."""
    from sqlalchemy import inspect, text

    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            rows[table] = [tuple(r) for r in connection.execute(text(f'SELECT * FROM "{table}"'))]
    return rows
