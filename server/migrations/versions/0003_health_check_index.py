"""An index for each board's last health check (the dashboard's device table): health-check jobs by board.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Frozen, as 0001: plain SQLAlchemy types only.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_health_check_actual_device_number", "jobs", ["health_check", "actual_device", "number"])


def downgrade() -> None:
    op.drop_index("ix_jobs_health_check_actual_device_number", table_name="jobs")
