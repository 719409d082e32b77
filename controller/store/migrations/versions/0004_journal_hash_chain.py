"""journal.prev_hash and journal.hash: the tamper-evident hash chain, from the next row on.

The columns are added empty: rows already in the journal stay unsealed (both columns null),
and each site's chain starts at its first row written after the upgrade, whose ``prev_hash``
is the genesis value. That row is the documented marker :func:`controller.store.chain.verify`
checks: unsealed rows may only form a prefix of a site's journal, the first sealed row must
chain to genesis, and every row after it must be sealed and chained.

Why not seal the old rows here: the journal is never pruned (a site at four lines of 20,000
parcels/h writes some 8 million rows a day, and the central database holds every site's
history), this revision runs in one transaction while the site starts (systemd allows it
120 s), and sealing ran at about 11,000 rows/s when measured, so a month of history would
keep the site from starting for hours. Sealing them afterwards would also vouch only for
whatever they hold at upgrade time; "unsealed" says exactly what is known about them. Adding
nullable columns is instant on SQLite and PostgreSQL alike, so the local journal and the
central copy stay identical: same rows unsealed, same chain from the same row on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journal", sa.Column("prev_hash", sa.String(), nullable=True))
    op.add_column("journal", sa.Column("hash", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
