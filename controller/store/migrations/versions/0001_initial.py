"""Journal and forward_state tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("wall_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("line", sa.String(), nullable=False),
        sa.Column("tracking_id", sa.BigInteger(), nullable=False),
        sa.Column("hawb", sa.String(), nullable=False),
        sa.Column("state_from", sa.String(), nullable=False),
        sa.Column("state_to", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("lane", sa.Integer(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("policy_version", sa.String(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("site", "seq", name="pk_journal"),
    )
    op.create_index("ix_journal_hawb", "journal", ["hawb"])
    op.create_index("ix_journal_line_tracking_id", "journal", ["line", "tracking_id"])
    op.create_table(
        "forward_state",
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_forward_state"),
    )


def downgrade() -> None:
    op.drop_table("forward_state")
    op.drop_index("ix_journal_line_tracking_id", table_name="journal")
    op.drop_index("ix_journal_hawb", table_name="journal")
    op.drop_table("journal")
