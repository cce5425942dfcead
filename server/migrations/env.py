"""Alembic environment: runs on the connection ``server.db.upgrade`` gives (or on ``database_url()``).

There is no alembic.ini: ``server.db.alembic_config`` builds the Config in
code. A new revision, compared against ``LAVA_DISPATCH_DATABASE_URL`` at head:

    python -c "from alembic import command; from server.db import alembic_config;
    command.revision(alembic_config(), 'what changed', autogenerate=True)"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from server.models import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from server.db import make_engine

        engine = make_engine()
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
        engine.dispose()
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the lab database migrations run online only (server.db.upgrade)")
run()
