"""Remote tokens: secrets a user gives the lab to send with a notify callback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Frozen, as 0001: plain SQLAlchemy types only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_remote_tokens_user_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_remote_tokens"),
    )
    op.create_index("ix_remote_tokens_user_id_name", "remote_tokens", ["user_id", "name"], unique=True)


def downgrade() -> None:
    op.drop_table("remote_tokens")
