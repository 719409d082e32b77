"""Take back the parcels still open and the holds still active, so that a restart loses none.

The journal writer keeps both in two small tables beside the journal, updated in the same
transaction as the rows that change them (:mod:`controller.store.openset`), so recovery reads
a few thousand rows instead of folding a day of journal. Parcels that were on the belt or at
inspection come back in their last state; one whose decision was in flight comes back
*scanned*, and the line controller records it as defaulted (the PLC applied its default lane).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from controller.core.holds import Hold
from controller.core.lifecycle import Parcel
from controller.store import migrate
from controller.store.openset import ActiveHold, OpenParcel
from controller.store.read import open_engine, read_open_set

__all__ = ["ActiveHold", "Recovered", "hold_on_clock", "recover"]


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restarting controller takes back from its journal.

    ``parcels`` are in the order they opened, with ``arrived_at`` on the new clock;
    ``beyond_horizon`` counts open parcels that arrived before the recovery horizon and are
    left out (the caller should log or alarm them: they need a person, not the sorter).
    """

    parcels: list[Parcel]
    holds: list[ActiveHold]
    beyond_horizon: int


def recover(
    source: str | Path | sa.Engine,
    site: str,
    now: float,
    wall_now: datetime,
    horizon_h: float,
) -> Recovered:
    """Open parcels and active holds of ``site`` from the journal at ``source`` (a Path to
    the file, a ``sqlite:///`` URL or an engine). Blocking: run it in a worker thread.

    ``now``/``wall_now`` are the controller clock and the aware UTC wall time at recovery:
    each arrival is carried onto the new clock as ``now - (wall_now - arrived).seconds``.
    Reads only the open-parcel and hold tables; the journal must be at the newest schema
    (start :class:`controller.store.journal.SqliteJournal` on it first, which migrates).
    """
    if horizon_h <= 0:
        raise ValueError(f"horizon_h must be > 0, got {horizon_h}")
    if wall_now.tzinfo is None:
        raise ValueError(f"wall_now must be timezone-aware, got {wall_now!r}")
    engine, owned = open_engine(source)
    try:
        revision, head = migrate.current_revision(engine), migrate.head_revision()
        if revision != head:
            raise RuntimeError(
                f"journal schema is at revision {revision}, recovery needs {head}: "
                "open the journal (which migrates it) before recovering"
            )
        rows, holds = read_open_set(engine, site)
    finally:
        if owned:
            engine.dispose()
    oldest = wall_now - timedelta(hours=horizon_h)
    kept = [row for row in rows if row.arrived_wall >= oldest]
    return Recovered(
        parcels=[_parcel(row, now, wall_now) for row in kept],
        holds=holds,
        beyond_horizon=len(rows) - len(kept),
    )


def hold_on_clock(hold: ActiveHold, now: float, wall_now: datetime) -> Hold:
    """An active hold as the controller keeps it, its placing time carried onto the new
    clock as arrivals are."""
    since = now - (wall_now - hold.placed_at).total_seconds()
    return Hold(hold.hawb, hold.reason, hold.user, since)


def _parcel(row: OpenParcel, now: float, wall_now: datetime) -> Parcel:
    arrived_at = now - (wall_now - row.arrived_wall).total_seconds()
    return Parcel(
        line=row.line,
        tracking_id=row.tracking_id,
        hawb=row.hawb,
        arrived_at=arrived_at,
        state=row.state,
        laps=row.laps,
    )
