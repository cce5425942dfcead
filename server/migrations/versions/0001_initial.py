"""The lab archive: jobs, results, compressed logs, users, tokens, device health changes.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Frozen: it names plain SQLAlchemy types, never server.models, so later
changes to the models cannot change what this revision creates.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def stamp(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("sub_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("submitter", sa.String(150), nullable=True),
        sa.Column("device_type", sa.String(200), nullable=False),
        sa.Column("actual_device", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("health_check", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        stamp("submit_time"),
        stamp("start_time", nullable=True),
        stamp("end_time", nullable=True),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("multinode_group", sa.String(32), nullable=True),
        sa.Column("error_type", sa.String(32), nullable=True),
        sa.Column("error_msg", sa.Text(), nullable=True),
        sa.Column("failure_comment", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("output_dir", sa.Text(), nullable=True),
        stamp("archived"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_number", "jobs", ["number", "sub_id", "id"])
    for column in ("state", "health", "device_type", "submitter", "actual_device"):
        op.create_index(f"ix_jobs_{column}_number", "jobs", [column, "number", "sub_id", "id"])
    op.create_index("ix_jobs_multinode_group", "jobs", ["multinode_group"])
    op.create_index("ix_jobs_end_time", "jobs", ["end_time"])

    op.create_table(
        "results",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("measurement", sa.Float(), nullable=True),
        sa.Column("units", sa.String(100), nullable=True),
        sa.Column("level", sa.String(64), nullable=True),
        stamp("logged", nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_results_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_results"),
    )
    op.create_index("ix_results_job_id_suite", "results", ["job_id", "suite"])

    op.create_table(
        "log_chunks",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=False),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_log_chunks_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "chunk_no", name="pk_log_chunks"),
    )
    op.create_index("ix_log_chunks_job_id_first_line", "log_chunks", ["job_id", "first_line"], unique=True)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(150), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        stamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("lookup", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        stamp("created"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_tokens_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_index("ix_tokens_lookup", "tokens", ["lookup"])

    op.create_table(
        "health_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("board", sa.String(200), nullable=False),
        sa.Column("old", sa.String(16), nullable=False),
        sa.Column("new", sa.String(16), nullable=False),
        sa.Column("who", sa.String(150), nullable=True),
        stamp("changed"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_health_changes"),
    )
    op.create_index("ix_health_changes_board_changed", "health_changes", ["board", "changed"])


def downgrade() -> None:
    for table in ("health_changes", "tokens", "users", "log_chunks", "results", "jobs"):
        op.drop_table(table)
