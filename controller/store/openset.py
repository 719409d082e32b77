"""Open parcels and active holds, derived from the journal and stored beside it.

Folding a day of journal rows at start-up takes minutes and gigabytes, so the journal writer
keeps what recovery needs in two small tables, ``open_parcels`` and ``active_holds``, and
updates them in the transaction that inserts the rows changing them: after a crash at any
point the tables agree with the journal.

Which rows change what is decided in one place, :func:`parcel_change` and
:func:`hold_change`; :class:`OpenSet` applies rows in ``seq`` order to an in-memory slice of
the tables. The journal writer keeps one per site as a mirror of its tables
(:class:`TableKeeper`); the migration that introduced the tables folds the whole journal
through the same class (:func:`fold_journal`, :func:`rebuild`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

import sqlalchemy as sa

from controller.core.domain import EntryKind
from controller.core.lifecycle import ParcelState
from controller.store.schema import active_holds_table, journal_table, open_parcels_table

#: Kinds whose ``state_to`` never describes a move that happened: an alarm carries none, and
#: an illegal-transition record names the state that was wanted and refused.
NO_STATE_CHANGE_KINDS: frozenset[str] = frozenset(
    {EntryKind.ILLEGAL_TRANSITION.value, EntryKind.ALARM.value}
)

_STATES: dict[str, ParcelState] = {state.value: state for state in ParcelState}
_SCANNED, _IN_INSPECTION = ParcelState.SCANNED, ParcelState.IN_INSPECTION  # hot-loop lookups

HoldCommand = Literal["hold", "lift"]


class Fact(NamedTuple):
    """The columns of a journal row that the open set depends on.

    ``wall_time`` and ``data`` may be None for rows that neither open a parcel nor carry a
    command: nothing reads them there, and the backfill skips decoding them.
    """

    seq: int
    ts: float
    wall_time: datetime | None
    kind: str
    line: str
    tracking_id: int
    hawb: str
    state_from: str
    state_to: str
    data: Mapping[str, Any] | None


def fact(row: Mapping[str, Any]) -> Fact:
    """The :class:`Fact` of a journal row given as a mapping of column values."""
    return Fact(
        seq=int(row["seq"]),
        ts=float(row["ts"]),
        wall_time=row["wall_time"],
        kind=str(row["kind"]),
        line=str(row["line"]),
        tracking_id=int(row["tracking_id"]),
        hawb=str(row["hawb"]),
        state_from=str(row["state_from"]),
        state_to=str(row["state_to"]),
        data=row["data"],
    )


# --- the rule ---------------------------------------------------------------------------------


def accepted(data: Mapping[str, Any] | None) -> bool:
    """Whether a command row records an accepted command; a refused one changes nothing."""
    return isinstance(data, Mapping) and data.get("accepted") is True


def parcel_change(kind: str, state_to: str, data: Mapping[str, Any] | None) -> ParcelState | None:
    """The state a journal row moves its parcel to, or None when it moves no parcel.

    This is the one place that says which rows change a parcel's state:

    * alarms and illegal-transition records never do (:data:`NO_STATE_CHANGE_KINDS`);
    * a command row does only when the command was accepted (``data["accepted"] is True``);
    * every other row does when its ``state_to`` is a :class:`ParcelState` value.
    """
    if kind in NO_STATE_CHANGE_KINDS:
        return None
    state = _STATES.get(state_to)
    if state is None:
        return None
    if kind == EntryKind.COMMAND.value and not accepted(data):
        return None
    return state


def hold_change(kind: str, hawb: str, data: Mapping[str, Any] | None) -> HoldCommand | None:
    """``"hold"`` or ``"lift"`` for an accepted hold or lift command on a HAWB, else None."""
    if kind != EntryKind.COMMAND.value or not hawb or not accepted(data):
        return None
    assert data is not None
    command = data.get("command")
    if command == "hold" or command == "lift":
        return command
    return None


def opens_parcel(state_from: str, state: ParcelState) -> bool:
    """A first scan: the row opens a new parcel rather than moving an open one."""
    return state is _SCANNED and state_from == ""


# --- the open set in memory -------------------------------------------------------------------


@dataclass(slots=True)
class OpenParcel:
    """One row of ``open_parcels``."""

    opened_seq: int
    line: str
    tracking_id: int
    hawb: str
    state: ParcelState
    laps: int
    arrived_wall: datetime
    updated_seq: int


@dataclass(frozen=True, slots=True)
class ActiveHold:
    """One row of ``active_holds``: who placed the hold on ``hawb``, why and when (UTC)."""

    hawb: str
    user: str
    reason: str
    placed_at: datetime
    placed_seq: int


class OpenSet:
    """Open parcels and active holds of one site, moved on by journal rows in ``seq`` order.

    A row refers to its parcel by ``(line, tracking_id)``. Tracking ids are reused, so
    several parcels may share that pair: rows moving a parcel out of inspection
    (``state_from == "in_inspection"``) refer to the oldest matching parcel waiting there
    (preferring the row's HAWB), every other row to the one on the belt. A first scan of a
    pair whose belt parcel is still open supersedes it: the controller had forgotten it.
    ``track_changes`` records which parcels and holds changed, for :meth:`write_changes`.
    """

    def __init__(
        self,
        parcels: Iterable[OpenParcel] = (),
        holds: Iterable[ActiveHold] = (),
        *,
        track_changes: bool = True,
    ) -> None:
        self.parcels: dict[int, OpenParcel] = {}
        self.holds: dict[str, ActiveHold] = {hold.hawb: hold for hold in holds}
        self._by_key: dict[tuple[str, int], list[int]] = {}  # opened_seqs, ascending
        self._track = track_changes
        self._changed_parcels: set[int] = set()
        self._changed_holds: set[str] = set()
        for parcel in parcels:
            self._add(parcel)
        self._changed_parcels.clear()  # the seed is what the tables already hold
        self._stored: set[int] = set(self.parcels) if track_changes else set()

    def apply(self, row: Fact) -> None:
        """Move the open set on by one journal row (rows must come in ``seq`` order)."""
        state = parcel_change(row.kind, row.state_to, row.data)
        if state is not None:
            self._move(row, state)
            return
        command = hold_change(row.kind, row.hawb, row.data)
        if command is not None:
            self._hold(row, command)

    def _move(self, row: Fact, state: ParcelState) -> None:
        if opens_parcel(row.state_from, state):
            stale = self._on_belt(row.line, row.tracking_id)
            if stale is not None:
                self._remove(stale)
            self._add(
                OpenParcel(
                    opened_seq=row.seq,
                    line=row.line,
                    tracking_id=row.tracking_id,
                    hawb=row.hawb,
                    state=state,
                    laps=0,
                    arrived_wall=_arrival(row),
                    updated_seq=row.seq,
                )
            )
            return
        if row.state_from == "in_inspection":
            parcel = self._at_inspection(row.line, row.tracking_id, row.hawb)
        else:
            parcel = self._on_belt(row.line, row.tracking_id)
        if parcel is None:
            return  # opened before the journal began, or already closed
        if state is _SCANNED:
            parcel.laps += 1  # came round again after recirculating
            parcel.hawb = parcel.hawb or row.hawb  # a no-read read on this lap
        parcel.state = state
        parcel.updated_seq = row.seq
        if state.terminal:
            self._remove(parcel)
        elif self._track:
            self._changed_parcels.add(parcel.opened_seq)

    def _hold(self, row: Fact, command: HoldCommand) -> None:
        if command == "hold":
            data = row.data or {}
            self.holds[row.hawb] = ActiveHold(
                hawb=row.hawb,
                user=str(data.get("user", "")),
                reason=str(data.get("reason", "")),
                placed_at=_wall(row),
                placed_seq=row.seq,
            )
        else:
            self.holds.pop(row.hawb, None)
        if self._track:
            self._changed_holds.add(row.hawb)

    def _on_belt(self, line: str, tracking_id: int) -> OpenParcel | None:
        """The newest parcel with this key that is not at inspection (at most one is)."""
        for seq in reversed(self._by_key.get((line, tracking_id), ())):
            parcel = self.parcels[seq]
            if parcel.state is not _IN_INSPECTION:
                return parcel
        return None

    def _at_inspection(self, line: str, tracking_id: int, hawb: str) -> OpenParcel | None:
        """The oldest parcel with this key waiting at inspection, of ``hawb`` if any is."""
        seqs = self._by_key.get((line, tracking_id), ())
        waiting = [p for p in map(self.parcels.__getitem__, seqs) if p.state is _IN_INSPECTION]
        same_hawb = [p for p in waiting if p.hawb == hawb]
        return min(same_hawb or waiting, key=lambda p: p.opened_seq, default=None)

    def _add(self, parcel: OpenParcel) -> None:
        self.parcels[parcel.opened_seq] = parcel
        self._by_key.setdefault((parcel.line, parcel.tracking_id), []).append(parcel.opened_seq)
        if self._track:
            self._changed_parcels.add(parcel.opened_seq)

    def _remove(self, parcel: OpenParcel) -> None:
        del self.parcels[parcel.opened_seq]
        key = (parcel.line, parcel.tracking_id)
        seqs = self._by_key[key]
        seqs.remove(parcel.opened_seq)
        if not seqs:
            del self._by_key[key]
        if self._track:
            self._changed_parcels.add(parcel.opened_seq)

    # --- writing back -----------------------------------------------------------------------

    def write_changes(self, conn: sa.Connection, site: str) -> None:
        """Write what changed since the last call into the tables, in ``conn``'s transaction.

        Only rows that changed are written: closed parcels deleted, moved ones updated, new
        ones inserted (a parcel opened and closed in between is never written at all).
        """
        if not self._track:
            raise RuntimeError("this OpenSet does not track changes; use write_all")
        changed, stored, present = self._changed_parcels, self._stored, self.parcels
        closed = [{"k_site": site, "k_seq": seq} for seq in changed & stored if seq not in present]
        moved = [_moved_row(site, present[seq]) for seq in changed & stored if seq in present]
        opened = [present[seq] for seq in sorted(changed - stored) if seq in present]
        if closed:
            conn.execute(_DELETE_PARCEL, closed)
        if moved:
            conn.execute(_UPDATE_PARCEL, moved)
        holds = sorted(self._changed_holds)
        if holds:
            conn.execute(_DELETE_HOLD, [{"k_site": site, "k_hawb": hawb} for hawb in holds])
        self._insert(conn, site, opened, [self.holds[h] for h in holds if h in self.holds])
        stored.difference_update(row["k_seq"] for row in closed)
        stored.update(parcel.opened_seq for parcel in opened)
        changed.clear()
        self._changed_holds.clear()

    def write_all(self, conn: sa.Connection, site: str) -> None:
        """Insert every open parcel and active hold (into tables empty for ``site``)."""
        self._insert(conn, site, list(self.parcels.values()), list(self.holds.values()))

    @staticmethod
    def _insert(
        conn: sa.Connection, site: str, parcels: list[OpenParcel], holds: list[ActiveHold]
    ) -> None:
        if parcels:
            conn.execute(sa.insert(open_parcels_table), [parcel_row(site, p) for p in parcels])
        if holds:
            conn.execute(sa.insert(active_holds_table), [hold_row(site, h) for h in holds])


def parcel_row(site: str, parcel: OpenParcel) -> dict[str, Any]:
    """``parcel`` as an ``open_parcels`` row."""
    return {
        "site": site,
        "opened_seq": parcel.opened_seq,
        "line": parcel.line,
        "tracking_id": parcel.tracking_id,
        "hawb": parcel.hawb,
        "state": parcel.state.value,
        "laps": parcel.laps,
        "arrived_wall": parcel.arrived_wall,
        "updated_seq": parcel.updated_seq,
    }


def hold_row(site: str, hold: ActiveHold) -> dict[str, Any]:
    """``hold`` as an ``active_holds`` row."""
    return {
        "site": site,
        "hawb": hold.hawb,
        "placed_by": hold.user,
        "reason": hold.reason,
        "placed_at": hold.placed_at,
        "placed_seq": hold.placed_seq,
    }


_P, _H = open_parcels_table.c, active_holds_table.c
_DELETE_PARCEL = sa.delete(open_parcels_table).where(
    _P.site == sa.bindparam("k_site"), _P.opened_seq == sa.bindparam("k_seq")
)
_UPDATE_PARCEL = (
    sa.update(open_parcels_table)
    .where(_P.site == sa.bindparam("k_site"), _P.opened_seq == sa.bindparam("k_seq"))
    .values(state=sa.bindparam("v_state"), laps=sa.bindparam("v_laps"))
    .values(hawb=sa.bindparam("v_hawb"))
    .values(updated_seq=sa.bindparam("v_updated"))
)
_DELETE_HOLD = sa.delete(active_holds_table).where(
    _H.site == sa.bindparam("k_site"), _H.hawb == sa.bindparam("k_hawb")
)


def _moved_row(site: str, parcel: OpenParcel) -> dict[str, Any]:
    """Parameters of :data:`_UPDATE_PARCEL`: state, laps, the last row and the HAWB (a
    no-read parcel may be read on a later lap) change."""
    return {
        "k_site": site,
        "k_seq": parcel.opened_seq,
        "v_state": parcel.state.value,
        "v_laps": parcel.laps,
        "v_hawb": parcel.hawb,
        "v_updated": parcel.updated_seq,
    }


def _arrival(row: Fact) -> datetime:
    """Arrival as wall time: the row's wall time less the clock seconds since ``arrived_at``
    (both ``ts`` and ``arrived_at`` are on the clock of the controller that wrote the row)."""
    wall = _wall(row)
    arrived = (row.data or {}).get("arrived_at")
    if isinstance(arrived, int | float) and not isinstance(arrived, bool):
        elapsed = row.ts - float(arrived)
        if math.isfinite(elapsed):
            return wall - timedelta(seconds=elapsed)
    return wall


def _wall(row: Fact) -> datetime:
    if row.wall_time is None:
        raise ValueError(f"journal row {row.seq} needs its wall_time here")
    return row.wall_time


# --- the journal writer's side --------------------------------------------------------------


class TableKeeper:
    """Keeps one site's ``open_parcels`` and ``active_holds`` in step with the journal rows
    a writer commits, for that writer's thread alone.

    It mirrors the site's open parcels in memory (loaded from the tables when first needed),
    so a batch costs only the rows it changes. Call :meth:`apply` inside the transaction
    that inserts the rows; call :meth:`discard` when that transaction fails, because the
    mirror is then ahead of the tables and is reloaded from them on the next batch.
    """

    def __init__(self, site: str) -> None:
        self.site = site
        self._mirror: OpenSet | None = None

    def load(self, conn: sa.Connection) -> None:
        """Read the site's open parcels into the mirror (in ``conn``'s transaction)."""
        self._mirror = OpenSet(load_parcels(conn, self.site))

    def apply(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Apply journal rows just inserted for the site, in ``conn``'s transaction."""
        if self._mirror is None:
            self.load(conn)
        assert self._mirror is not None
        for row in rows:
            self._mirror.apply(fact(row))
        self._mirror.write_changes(conn, self.site)

    def discard(self) -> None:
        self._mirror = None


def load_parcels(conn: sa.Connection, site: str) -> list[OpenParcel]:
    """Open parcels of ``site``, in the order they opened."""
    c = open_parcels_table.c
    stmt = sa.select(open_parcels_table).where(c.site == site).order_by(c.opened_seq)
    return [
        OpenParcel(
            opened_seq=row.opened_seq,
            line=row.line,
            tracking_id=row.tracking_id,
            hawb=row.hawb,
            state=ParcelState(row.state),
            laps=row.laps,
            arrived_wall=row.arrived_wall,
            updated_seq=row.updated_seq,
        )
        for row in conn.execute(stmt)
    ]


def load_holds(conn: sa.Connection, site: str) -> list[ActiveHold]:
    """Active holds of ``site``, in the order they were placed."""
    h = active_holds_table.c
    stmt = sa.select(active_holds_table).where(h.site == site).order_by(h.placed_seq)
    return [
        ActiveHold(
            hawb=row.hawb,
            user=row.placed_by,
            reason=row.reason,
            placed_at=row.placed_at,
            placed_seq=row.placed_seq,
        )
        for row in conn.execute(stmt)
    ]


# --- folding a whole journal (the backfill) ---------------------------------------------------


def _fold_select(site: str | None) -> sa.Select[Any]:
    """The journal rows that may change the open set, in ``(site, seq)`` order.

    ``wall_time`` and ``data`` are fetched only where a row may open a parcel or carry a
    command; that keeps a day of decision inputs from being decoded for nothing.
    """
    j = journal_table.c
    needs_detail = sa.or_(sa.and_(j.state_from == "", j.state_to != ""), j.kind == "command")
    stmt = sa.select(
        j.site,
        j.seq,
        j.ts,
        sa.case((needs_detail, j.wall_time)).label("wall_time"),
        j.kind,
        j.line,
        j.tracking_id,
        j.hawb,
        j.state_from,
        j.state_to,
        sa.case((needs_detail, j.data)).label("data"),
    ).where(sa.or_(j.state_to != "", j.kind == "command"))
    if site is not None:
        stmt = stmt.where(j.site == site)
    return stmt.order_by(j.site, j.seq)


#: A row of :func:`_fold_select`: wall_time and data come back typed, or as stored text.
_FoldRow = tuple[str, int, float, object, str, str, int, str, str, str, object]


def fold_journal(conn: sa.Connection, site: str | None = None) -> dict[str, OpenSet]:
    """Fold every journal row (of ``site``, or of every site) into open sets, by site.

    Streams the rows; memory follows the parcels open at any one time, not the journal.
    """
    sets: dict[str, OpenSet] = {}
    current: OpenSet | None = None
    current_site: str | None = None
    result = conn.execution_options(yield_per=20_000).execute(_fold_select(site))
    for raw in result:
        site_, seq, ts, wall, kind, line, tracking_id, hawb, state_from, state_to, data = cast(
            "_FoldRow", raw
        )
        if site_ != current_site:
            current_site = site_
            current = sets[site_] = OpenSet(track_changes=False)
        assert current is not None
        current.apply(
            Fact(
                seq,
                ts,
                None if wall is None else _utc(wall),
                kind,
                line,
                tracking_id,
                hawb,
                state_from,
                state_to,
                None if data is None else _json(data),
            )
        )
    return sets


def rebuild(conn: sa.Connection) -> dict[str, tuple[int, int]]:
    """Replace both tables by a fold of the whole journal, in ``conn``'s transaction.

    Returns ``site -> (open parcels, active holds)``.
    """
    sets = fold_journal(conn)
    conn.execute(sa.delete(open_parcels_table))
    conn.execute(sa.delete(active_holds_table))
    for site, openset in sets.items():
        openset.write_all(conn, site)
    return {site: (len(s.parcels), len(s.holds)) for site, s in sets.items()}


def _utc(value: object) -> datetime | None:
    """A wall time read through an untyped CASE: a datetime, or SQLite's stored text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"wall_time must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: object) -> Mapping[str, Any] | None:
    """``data`` read through an untyped CASE: a JSON object (text on SQLite) or None."""
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return value if isinstance(value, Mapping) else None
