"""Real lab databases for the server tests: a SQLite file, and a throw-away PostgreSQL database.

The PostgreSQL server is ``LAVA_DISPATCH_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, the trust login of
a local or CI server). Each test gets a database of its own,
``lava_dispatch_test_<run>_<n>``, dropped afterwards. The PostgreSQL tests
are skipped only when nothing answers on that host and port; a server that
answers but refuses the login fails them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

ADMIN_URL = os.environ.get("LAVA_DISPATCH_TEST_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RUN = secrets.token_hex(4)
_numbers = itertools.count()
BACKENDS = ("sqlite", "postgresql")


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


def _admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def new_database_url(backend: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Yields the URL of an empty database of ``backend``; drops it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'lab.sqlite3'}"
        return
    reason = postgres_answers()
    if reason:
        pytest.skip(reason)
    from sqlalchemy.engine import make_url

    name = f"lava_dispatch_test_{RUN}_{next(_numbers)}"
    admin = _admin_engine()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        from server.db import dispose_engines

        dispose_engines()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database, once on SQLite and once on PostgreSQL."""
    from server.db import dispose_engines

    yield from new_database_url(request.param, tmp_path)
    dispose_engines()


@pytest.fixture
def engine(db_url):  # type: ignore[no-untyped-def]
    """The lab engine of an empty database, its schema created (as on first use)."""
    from server.db import get_engine

    return get_engine(db_url)


@pytest.fixture
def lab_env(db_url, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The database as the CLI finds it: through LAVA_DISPATCH_DATABASE_URL."""
    monkeypatch.setenv("LAVA_DISPATCH_DATABASE_URL", db_url)
    return db_url


def table_rows(engine) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    """Every row of every table of the lab schema (for scanning what is stored)."""
    from sqlalchemy import inspect, text

    rows: dict[str, list[tuple]] = {}
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            rows[table] = [tuple(r) for r in connection.execute(text(f'SELECT * FROM "{table}"'))]
    return rows
