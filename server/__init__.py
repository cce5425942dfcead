"""The lab server's side of lava-dispatch: the durable archive (jobs, results, logs), users and tokens.

Nothing here is imported by ``lava-dispatch run``, the workers or the
scheduler, and importing this package loads nothing: SQLAlchemy and Alembic
come in only with the module that needs them (``server.db``, ``server.archive``,
...), so a board host never needs them installed.
"""
