"""open_parcels and active_holds, backfilled from the journal.

Start-up recovery reads these two small tables instead of folding a day of journal rows;
the journal writer keeps them in step from now on. The backfill folds every row already in a
local (SQLite) journal through the same rule the writer uses, so a journal written by the
previous release recovers the same parcels. The central PostgreSQL database gets the tables
empty: nothing maintains them there, and its journal holds every site's history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from controller.store.openset import fold_journal, hold_row, parcel_row

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    open_parcels = op.create_table(
        "open_parcels",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("line", sa.String(), nullable=False),
        sa.Column("tracking_id", sa.BigInteger(), nullable=False),
        sa.Column("hawb", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("laps", sa.Integer(), nullable=False),
        sa.Column("arrived_wall", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "opened_seq", name="pk_open_parcels"),
    )
    op.create_index(
        "ix_open_parcels_site_line_tracking_id",
        "open_parcels",
        ["site", "line", "tracking_id"],
    )
    active_holds = op.create_table(
        "active_holds",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("hawb", sa.String(), nullable=False),
        sa.Column("placed_by", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("placed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "hawb", name="pk_active_holds"),
    )
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for site, openset in fold_journal(bind).items():
        _insert(bind, open_parcels, [parcel_row(site, p) for p in openset.parcels.values()])
        _insert(bind, active_holds, [hold_row(site, h) for h in openset.holds.values()])


def _insert(bind: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert through this revision's own table, so later columns cannot break it."""
    names = set(table.columns.keys())
    if rows:
        bind.execute(sa.insert(table), [{k: v for k, v in r.items() if k in names} for r in rows])


def downgrade() -> None:
    op.drop_table("active_holds")
    op.drop_index("ix_open_parcels_site_line_tracking_id", table_name="open_parcels")
    op.drop_table("open_parcels")
