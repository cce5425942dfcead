"""Alembic migrations of the lab database; run by ``server.db.upgrade``, never from an alembic.ini."""
