"""The topic layout and the payloads, schema version 1 (docs/events.md says the same for
consumers).

Every topic starts ``<prefix>/<site>/``; the next level is a journal row's ``line`` (a line
id, or for an alarm the part it comes from; :data:`SITE_WIDE` for a row of no line). Names
are percent-encoded into one level each, so no id can split a level or read as a wildcard.

* ``.../<line>/parcel/<kind>``: each parcel row (decision, transition, confirmation ...);
* ``.../<line>/command``, ``.../<line>/alarm``: each command row, each alarm row;
* ``.../<line>/alarm/<id>``: retained while the alarm is active (the raising row), cleared
  by an empty retained payload;
* ``.../<line>/lane/<id>/state``: retained, a lane's state;
* ``<prefix>/<site>/kpi``: retained, the site's KPIs, periodic;
* ``<prefix>/<site>/status``: retained, whether the publisher is online (its will says not).

A payload is one JSON object whose ``schema`` names its shape and version. A journal row's
event carries ``site``, ``seq`` and every column of the row; ``(site, seq)`` identifies it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from controller.core.domain import EntryKind, LaneStatus
from controller.core.views import SiteView
from controller.store.rows import json_value
from controller.store.schema import JOURNAL_COLUMNS

EVENT_SCHEMA: Final = "cargogate.event/1"
LANE_SCHEMA: Final = "cargogate.lane/1"
KPI_SCHEMA: Final = "cargogate.kpi/1"
STATUS_SCHEMA: Final = "cargogate.status/1"

SITE_WIDE: Final = "~"
"""The line level of a row that belongs to no line (a site-wide command). No line id can be
``~``."""

PARCEL_KINDS: Final = frozenset(
    {
        EntryKind.TRANSITION,
        EntryKind.DECISION,
        EntryKind.CONFIRMATION,
        EntryKind.DEADLINE_MISS,
        EntryKind.ILLEGAL_TRANSITION,
        EntryKind.INSPECTION_RESULT,
    }
)

Row = Mapping[str, Any]
"""A journal row as read: column name to value (``wall_time`` a datetime)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish (always QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


def level(name: str) -> str:
    """``name`` as one topic level: ``/``, ``+``, ``#``, ``%`` and everything outside
    letters, digits and ``_.-~`` percent-encoded; :data:`SITE_WIDE` when empty."""
    return quote(name, safe="") or SITE_WIDE


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact ASCII JSON; floats that are not finite become strings, as in the journal.
    ASCII so that any text the journal took (a lone surrogate typed into a comment, say)
    goes out escaped, never as an encoding error that would stop the stream."""
    return json.dumps(json_value(payload, "payload"), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one site under ``prefix``."""

    prefix: str
    site: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{level(self.site)}"

    @property
    def kpi(self) -> str:
        return f"{self.root}/kpi"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def line(self, line: str) -> str:
        return f"{self.root}/{level(line)}"

    def event(self, kind: str, line: str) -> str:
        """Where a row of ``kind`` goes: ``parcel/<kind>`` for a parcel's, else ``<kind>``."""
        family = f"parcel/{level(kind)}" if kind in PARCEL_KINDS else level(kind)
        return f"{self.line(line)}/{family}"

    def alarm(self, line: str, source: str) -> str:
        """An alarm's retained topic; its id is the source after its line's ``line/``
        (``plc-link`` for ``L1/plc-link``), or the whole source."""
        alarm_id = source.removeprefix(f"{line}/") if line else source
        return f"{self.line(line)}/alarm/{level(alarm_id)}"

    def lane(self, line: str, lane: int) -> str:
        return f"{self.line(line)}/lane/{lane}/state"


def event_payload(row: Row) -> bytes:
    """A journal row's event: the schema, then every column (``site`` and ``seq`` first)."""
    fields: dict[str, Any] = {"schema": EVENT_SCHEMA}
    for column in JOURNAL_COLUMNS:
        value = row.get(column)
        fields[column] = value.isoformat() if isinstance(value, datetime) else value
    return encode(fields)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """What an alarm row does to its retained topic: sets it (``payload``) or clears it."""

    topic: str
    payload: bytes | None


def row_messages(topics: Topics, row: Row) -> tuple[list[Message], AlarmChange | None]:
    """The publishes one journal row makes, in order, and its alarm change if it has one."""
    payload = event_payload(row)
    kind, line = str(row["kind"]), str(row["line"])
    messages = [Message(topics.event(kind, line), payload)]
    change = alarm_change(topics, row, payload)
    if change is not None:
        messages.append(Message(change.topic, change.payload or b"", retain=True))
    return messages, change


def alarm_change(topics: Topics, row: Row, payload: bytes) -> AlarmChange | None:
    """An alarm row's change to its retained topic (None for other rows, and for an alarm
    row without a source: its event still goes out)."""
    if row["kind"] != EntryKind.ALARM:
        return None
    data = row.get("data")
    source = data.get("source") if isinstance(data, Mapping) else None
    if not isinstance(source, str) or not source:
        return None
    topic = topics.alarm(str(row["line"]), source)
    return AlarmChange(topic, payload if row["state_to"] == "active" else None)


def lane_state(status: int) -> str:
    """A lane status word as the payload names it (``available``, ``full``, ``blocked``);
    a word that names no state is ``unknown-<n>``."""
    try:
        return LaneStatus(status).name.lower()
    except ValueError:
        return f"unknown-{status}"


def lane_payload(site: str, line: str, lane: int, kind: str, state: str, at: datetime) -> bytes:
    return encode(
        {
            "schema": LANE_SCHEMA,
            "site": site,
            "line": line,
            "lane": lane,
            "kind": kind,
            "state": state,
            "at": at.isoformat(),
        }
    )


def kpi_payload(view: SiteView, at: datetime) -> bytes:
    return encode(
        {
            "schema": KPI_SCHEMA,
            "site": view.site,
            "at": at.isoformat(),
            "clock_s": view.controller.clock_s,
            "open_parcels": view.open_parcels,
            "alarms_active": len(view.alarms),
            "kpis": view.kpis.as_dict(),
        }
    )


def status_payload(site: str, *, online: bool) -> bytes:
    return encode({"schema": STATUS_SCHEMA, "site": site, "online": online})
