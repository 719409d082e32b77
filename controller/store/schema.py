"""The journal schema, shared verbatim by the local SQLite journal and the central PostgreSQL.

Rows are keyed by ``(site, seq)``: each site's journal numbers its own entries, so copying
rows from any site into the central database is idempotent. Each row carries its link of the
site's hash chain (``prev_hash``, ``hash``; :mod:`controller.store.chain`), copied verbatim.
The Alembic revisions in ``migrations/versions`` create these tables; keep both in step.
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
    """One durable audit record: a :class:`controller.core.domain.JournalEntry` plus its key."""

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
    prev_hash: Mapped[str | None] = mapped_column(sa.String)
    """``hash`` of the site's previous row (:data:`controller.store.chain.GENESIS` for seq 1)."""
    hash: Mapped[str | None] = mapped_column(sa.String)
    """Hex SHA-256 over this row and ``prev_hash`` (:mod:`controller.store.chain`); null only
    where someone removed it, which ``cargogate audit verify`` reports."""

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


class OpenParcelRow(Base):
    """A parcel the journal shows open (not in a terminal state), kept by the journal writer.

    Maintained in the same transaction as the journal rows that change it (see
    :mod:`controller.store.openset`), so start-up reads this small table instead of folding
    the whole journal. The key is the ``seq`` of the row that opened the parcel: tracking ids
    are reused, and a new parcel may open with the ``(line, tracking_id)`` of one that still
    waits at inspection. Only the local journal maintains it; the central copy stays empty.
    """

    __tablename__ = "open_parcels"

    site: Mapped[str] = mapped_column(sa.String, primary_key=True)
    opened_seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    """``journal.seq`` of the row that opened the parcel (first scan)."""
    line: Mapped[str] = mapped_column(sa.String)
    tracking_id: Mapped[int] = mapped_column(sa.BigInteger)
    hawb: Mapped[str] = mapped_column(sa.String)
    state: Mapped[str] = mapped_column(sa.String)
    """A non-terminal :class:`controller.core.lifecycle.ParcelState` value."""
    laps: Mapped[int] = mapped_column(sa.Integer)
    arrived_wall: Mapped[datetime]
    """UTC wall time of the parcel's arrival (where its clearance clock starts)."""
    updated_seq: Mapped[int] = mapped_column(sa.BigInteger)
    """``journal.seq`` of the last row that changed the parcel."""

    __table_args__ = (
        sa.Index("ix_open_parcels_site_line_tracking_id", "site", "line", "tracking_id"),
    )


class ActiveHoldRow(Base):
    """A HAWB whose last accepted hold/lift command is a hold, kept like ``open_parcels``."""

    __tablename__ = "active_holds"

    site: Mapped[str] = mapped_column(sa.String, primary_key=True)
    hawb: Mapped[str] = mapped_column(sa.String, primary_key=True)
    placed_by: Mapped[str] = mapped_column(sa.String)
    """The ``user`` of the hold command."""
    reason: Mapped[str] = mapped_column(sa.String)
    placed_at: Mapped[datetime]
    """UTC wall time the hold was journalled."""
    placed_seq: Mapped[int] = mapped_column(sa.BigInteger)


class UserRow(Base):
    """A console user (:class:`controller.core.users.User`) and when it was added and changed.

    Kept in the site's own journal database, so a site's console works without the central
    one; see :mod:`controller.store.users`.
    """

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(sa.String, primary_key=True)
    role: Mapped[str] = mapped_column(sa.String)
    """A :class:`controller.core.users.Role` value; any other reads as an inactive viewer."""
    password_hash: Mapped[str] = mapped_column(sa.String)
    """An argon2 hash in PHC string form; never the password."""
    active: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime]
    changed_at: Mapped[datetime]
    """UTC time of the last change to the role, the password or ``active``."""


journal_table: sa.Table = JournalRow.__table__  # type: ignore[assignment]
forward_state_table: sa.Table = ForwardState.__table__  # type: ignore[assignment]
open_parcels_table: sa.Table = OpenParcelRow.__table__  # type: ignore[assignment]
active_holds_table: sa.Table = ActiveHoldRow.__table__  # type: ignore[assignment]
users_table: sa.Table = UserRow.__table__  # type: ignore[assignment]
metadata = Base.metadata

JOURNAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in journal_table.columns)
