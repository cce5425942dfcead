"""The lab database: where it is, how to connect, and keeping its schema current.

``LAVA_DISPATCH_DATABASE_URL`` names the database (any SQLAlchemy URL;
``postgresql://`` means psycopg 3). Without it the lab uses SQLite at
``<lab dir>/lab.sqlite3``. SQLite runs in WAL mode (readers never wait for
the writer), with a busy timeout (a second process waits for the write lock
instead of failing) and foreign keys on (deleting a job deletes its results
and log). A database gets its schema on first use and an older one is
upgraded: ``get_engine`` runs the Alembic migrations once per process, under
a lock, so several server processes may start at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_SECONDS = 30.0

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def lab_dir() -> Path:
    """The lab server's state directory: ``LAVA_DISPATCH_LAB_DIR``, else a system or a per-user place."""
    value = os.environ.get("LAVA_DISPATCH_LAB_DIR")
    if value:
        return Path(value).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/lava-dispatch")
    return Path.home() / ".local" / "share" / "lava-dispatch"


def database_url() -> str:
    """``LAVA_DISPATCH_DATABASE_URL``, else SQLite in the lab directory."""
    value = os.environ.get("LAVA_DISPATCH_DATABASE_URL", "").strip()
    if value:
        return value
    return f"sqlite:///{lab_dir() / 'lab.sqlite3'}"


def display_url(engine_or_url: Engine | str) -> str:
    """The URL without its password, for messages."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.render_as_string(hide_password=True)


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``database_url()``), configured for the lab; the schema is not touched."""
    parsed = make_url(url or database_url())
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_SECONDS)
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys; and real transactions (pysqlite's legacy mode skips BEGIN for DDL and SELECT).

    A session opened with ``write=True`` begins with ``BEGIN IMMEDIATE``: it
    takes the write lock first, so a read followed by a write in the same
    transaction can never fail with "database is locked" half-way.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
        _wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("lava_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _wal(cursor: Any) -> None:
    """Switches the file to WAL (persistent: done once per file). SQLite answers "locked" at once, without
    its busy handler, when another connection opens the new file at the same moment: so wait here."""
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic Config built in code (no alembic.ini): the packaged migrations, run on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's migration revision, or None for a database without the lab schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Brings the schema to the newest revision (creating it in an empty database); returns the revision.

    The whole upgrade is one transaction (SQLite and PostgreSQL both have
    transactional DDL), taken under a lock: SQLite's write lock, a
    PostgreSQL advisory lock. A second process starting at the same time waits,
    then finds the schema current. A database migrated by a newer
    lava-dispatch is refused, not touched.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    with engine.execution_options(lava_write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key("schema")})
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in {s.revision for s in script.walk_revisions()}:
            raise RuntimeError(f"the database {display_url(engine)} is at schema revision {current}, which this "
                               f"lava-dispatch does not know (newest known: {script.get_current_head()}): "
                               f"a newer lava-dispatch migrated it")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    revision = current_revision(engine)
    assert revision is not None
    return revision


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock."""
    digest = hashlib.sha256(f"lava-dispatch:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: ``database_url()``), its schema upgraded on first use."""
    key = url or database_url()
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = make_engine(key)
            try:
                upgrade(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Closes every cached engine's connections (tests; a process that forks)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session(engine: Engine | None = None, *, write: bool = False) -> Iterator[Session]:
    """A session in one transaction, committed at the end (rolled back on an exception).

    ``write=True`` says the transaction writes: on SQLite it takes the write
    lock at BEGIN. Objects stay readable after the commit.
    """
    bind = engine if engine is not None else get_engine()
    if write:
        bind = bind.execution_options(lava_write=True)
    with Session(bind, expire_on_commit=False) as s, s.begin():
        yield s


def advisory_lock(s: Session, name: str) -> None:
    """Serialises transactions about ``name`` on PostgreSQL (SQLite's write lock already does)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
