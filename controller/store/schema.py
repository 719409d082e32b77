"""The journal schema, shared verbatim by the local SQLite journal and the central PostgreSQL.

Rows are keyed by ``(site, seq)``: each site's journal numbers its own entries, so copying
rows from any site into the central database is idempotent. The Alembic revisions in
``migrations/versions`` create these tables; keep both in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no offset, so values are stored as UTC and come back tagged UTC; PostgreSQL
    stores ``timestamptz`` and values come back converted to UTC. Naive datetimes are refused.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: journal times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s"})
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime()}  # noqa: RUF012


class JournalRow(Base):
    """One durable audit record: a :class:`controller.domain.JournalEntry` plus its key."""

    __tablename__ = "journal"

    site: Mapped[str] = mapped_column(sa.String, primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[float] = mapped_column(sa.Double)
    """Seconds on the controller's clock when the entry was made."""
    wall_time: Mapped[datetime]
    """UTC time when the journal wrote the row."""
    kind: Mapped[str] = mapped_column(sa.String)
    line: Mapped[str] = mapped_column(sa.String)
    tracking_id: Mapped[int] = mapped_column(sa.BigInteger)
    hawb: Mapped[str] = mapped_column(sa.String)
    state_from: Mapped[str] = mapped_column(sa.String)
    state_to: Mapped[str] = mapped_column(sa.String)
    destination: Mapped[str] = mapped_column(sa.String)
    lane: Mapped[int | None] = mapped_column(sa.Integer)
    reasons: Mapped[list[int]] = mapped_column(sa.JSON)
    """Reason codes as a JSON list of integers."""
    policy_version: Mapped[str] = mapped_column(sa.String)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    """The decision's inputs as a JSON object."""

    __table_args__ = (
        sa.Index("ix_journal_hawb", "hawb"),
        sa.Index("ix_journal_line_tracking_id", "line", "tracking_id"),
    )


class ForwardState(Base):
    """How far the local journal has been copied to a target (by target name)."""

    __tablename__ = "forward_state"

    target: Mapped[str] = mapped_column(sa.String, primary_key=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime]


journal_table: sa.Table = JournalRow.__table__  # type: ignore[assignment]
forward_state_table: sa.Table = ForwardState.__table__  # type: ignore[assignment]
metadata = Base.metadata

JOURNAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in journal_table.columns)
