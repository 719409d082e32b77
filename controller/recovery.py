"""Rebuild the parcels still open from the journal, so that a restart loses none.

The journal holds every state change, so the last state of each parcel is known. Parcels
that were on the belt or at inspection when the controller stopped come back with that
state; a parcel whose decision was in flight comes back as *defaulted* — the PLC applied its
default lane — and its confirmation then closes it as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from controller.lifecycle import Parcel, ParcelState

_OPEN = {s for s in ParcelState if not s.terminal}


def open_parcels(rows: Iterable[Mapping[str, Any]], now: float, wall_now: datetime) -> list[Parcel]:
    """Parcels whose last journalled state is not terminal, in journal order.

    ``rows`` are journal rows in ``seq`` order; ``now``/``wall_now`` are the controller clock
    and UTC wall time at recovery, used to carry each parcel's arrival onto the new clock.
    """
    on_belt: dict[tuple[str, int], Parcel] = {}
    at_inspection: dict[tuple[str, str], list[Parcel]] = {}
    for row in rows:
        to = row["state_to"]
        if to not in ParcelState._value2member_map_:
            continue  # alarms and entries without a state change
        state = ParcelState(to)
        key = (row["line"], row["tracking_id"])
        if state is ParcelState.SCANNED and not row["state_from"]:
            data = row["data"] or {}
            arrived = float(data.get("arrived_at", row["ts"]))
            elapsed = (wall_now - row["wall_time"]).total_seconds() + (row["ts"] - arrived)
            on_belt[key] = Parcel(row["line"], row["tracking_id"], row["hawb"], now - elapsed)
            on_belt[key].state = state
            continue
        if row["state_from"] == ParcelState.IN_INSPECTION.value:
            waiting = at_inspection.get((row["line"], row["hawb"]), [])
            if waiting:
                waiting.pop(0)
            continue
        parcel = on_belt.get(key)
        if parcel is None:
            continue
        if state is ParcelState.SCANNED:
            parcel.laps += 1
        parcel.state = state
        if state is ParcelState.IN_INSPECTION:
            del on_belt[key]
            at_inspection.setdefault((row["line"], row["hawb"]), []).append(parcel)
        elif state.terminal:
            del on_belt[key]
    survivors = [*on_belt.values(), *(p for ps in at_inspection.values() for p in ps)]
    return [p for p in survivors if p.state in _OPEN]
