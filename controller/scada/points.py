"""What the SCADA server publishes: a :class:`SiteView` turned into typed points under
stable node ids, without any OPC UA library.

Every point has a pattern (``Site.Lines.<line>.OnBelt``) from :data:`SPECS`, the one list
of what is published, its OPC UA type and its meaning (``docs/scada.md`` lists the same). A
node id is the pattern with each ``<placeholder>`` replaced by a key (a line id, a lane
number, an alarm source, a link's part), and the path of browse names is the pattern's
segments likewise: a key may itself hold a dot or a slash (``L1/plc-link``).

Ids stay stable: a :class:`Catalog` remembers every line, lane, alarm source and link ever
published, and such a key keeps its nodes when a later snapshot no longer lists it (an alarm
that cleared reads ``Active = false``; a line gone from the view has no figures). Figures the
snapshot lacks (the share before the first verdict, a PLC without a heartbeat, a site without a
forwarder) are ``None`` here: the server publishes them with a bad status, never as a made-up
zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from controller.console.schemas import Moment, severity
from controller.core.domain import LaneStatus
from controller.core.link import LinkState
from controller.core.views import AlarmView, LineView, Share, SiteView

log = logging.getLogger(__name__)

ROOT = "Site"
"""The root object's browse name and the first segment of every node id."""

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
STRING_MAX = 4096
"""Characters published of one string at most (a runaway message is cut, never refused)."""
MAX_KEYS = 1000
"""Alarm sources, links, lines, and lanes per line remembered at most: each keeps its nodes for
as long as the server runs, so a flood of odd keys must not grow the address space forever."""

_EARLIEST = datetime(1601, 1, 2, tzinfo=UTC)
"""OPC UA's DateTime starts in 1601; anything earlier is no time a SCADA can show."""


class Kind(StrEnum):
    """A point's OPC UA data type (the name is the built-in type's)."""

    INT32 = "Int32"
    INT64 = "Int64"
    DOUBLE = "Double"
    BOOLEAN = "Boolean"
    STRING = "String"
    DATETIME = "DateTime"
    STRING_ARRAY = "String[]"


@dataclass(frozen=True, slots=True)
class Spec:
    pattern: str
    kind: Kind
    doc: str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.split("."))


class _Keep:
    """The value a point keeps from before (an alarm's text once it cleared)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(frozen=True, slots=True)
class Point:
    spec: Spec
    path: tuple[str, ...]
    """Browse names from the root object down to this variable."""
    value: object
    """A value of ``spec.kind``'s Python type; None: no figure; :data:`KEEP`: unchanged."""

    @property
    def node_id(self) -> str:
        return ".".join(self.path)


_I32, _I64, _DBL, _BOOL, _STR, _DT, _STRS = (
    Kind.INT32,
    Kind.INT64,
    Kind.DOUBLE,
    Kind.BOOLEAN,
    Kind.STRING,
    Kind.DATETIME,
    Kind.STRING_ARRAY,
)

SPECS: Final[dict[str, Spec]] = {
    s.pattern: s
    for s in (
        Spec("Site.Id", _STR, "The site's id (site.id in the site file)."),
        Spec("Site.SnapshotTime", _DT, "When the published figures were taken (UTC)."),
        Spec("Site.ClockSeconds", _DBL, "The controller's clock at that moment (seconds)."),
        Spec("Site.Kpi.Decisions", _I64, "Lane decisions taken since start, all lines."),
        Spec(
            "Site.Kpi.DeadlineMisses",
            _I64,
            "Decisions that missed the sorter's deadline (the parcel took the default lane).",
        ),
        Spec("Site.Kpi.Recirculations", _I64, "Parcels sent round the sorter loop again."),
        Spec(
            "Site.Kpi.IllegalTransitions",
            _I64,
            "Parcel state changes the lifecycle refused (a bug or a misbehaving PLC).",
        ),
        Spec("Site.Kpi.Verdicts", _I64, "Clearance verdicts so far (Hits + Misses)."),
        Spec("Site.Kpi.Hits", _I64, "Parcels cleared within the clearance target."),
        Spec("Site.Kpi.Misses", _I64, "Parcels whose clearance target passed first."),
        Spec(
            "Site.Kpi.ShareWithinTarget",
            _DBL,
            "Hits / Verdicts (0-1); no figure before the first verdict.",
        ),
        Spec("Site.Kpi.TargetSeconds", _DBL, "The clearance target in seconds."),
        Spec("Site.Kpi.VerdictsPending", _I32, "Parcels arrived whose verdict is not known yet."),
        Spec("Site.Kpi.OpenParcels", _I32, "Parcels tracked and not closed, all lines."),
        Spec("Site.Kpi.Holds", _I32, "HAWBs on hold by an officer."),
        Spec("Site.Kpi.ReviewsWaiting", _I32, "Parcels waiting for an officer's review."),
        Spec("Site.Alarms.ActiveCount", _I32, "Alarms raised and not cleared."),
        Spec("Site.Alarms.UnacknowledgedCount", _I32, "Active alarms no one acknowledged."),
        Spec("Site.Alarms.ActiveSources", _STRS, "The sources of the active alarms, oldest first."),
        Spec("Site.Alarms.<source>.Active", _BOOL, "The alarm is raised now."),
        Spec(
            "Site.Alarms.<source>.Severity",
            _STR,
            "critical, warning or info (as the console shows it).",
        ),
        Spec(
            "Site.Alarms.<source>.Message",
            _STR,
            "What the alarm says (the last text once it cleared).",
        ),
        Spec(
            "Site.Alarms.<source>.Since",
            _DT,
            "When it was raised (UTC; the last raise once it cleared).",
        ),
        Spec("Site.Alarms.<source>.Acknowledged", _BOOL, "An operator acknowledged it."),
        Spec("Site.Alarms.<source>.AcknowledgedBy", _STR, 'Who acknowledged it ("" if no one).'),
        Spec("Site.Alarms.<source>.Comment", _STR, "The acknowledgement's comment."),
        Spec("Site.Journal.Rows", _I64, "Rows written to the local audit journal."),
        Spec("Site.Journal.Commits", _I64, "Commits (batches) of the local audit journal."),
        Spec("Site.Forwarder.Configured", _BOOL, "The site forwards its journal centrally."),
        Spec("Site.Forwarder.Connected", _BOOL, "The forwarder reaches the central database."),
        Spec(
            "Site.Forwarder.Backlog",
            _I64,
            "Local journal rows not yet confirmed by the central database.",
        ),
        Spec("Site.Forwarder.ShippedTotal", _I64, "Journal rows shipped centrally."),
        Spec("Site.Forwarder.Watermark", _I64, "The last journal row the central side confirmed."),
        Spec("Site.Forwarder.LastError", _STR, 'The last cycle\'s error ("" when it went well).'),
        Spec("Site.Risk.Results", _I64, "Risk results held for parcels yet to arrive."),
        Spec("Site.Risk.Evicted", _I64, "Risk results let go at the risk book's bound."),
        Spec(
            "Site.Links.<part>",
            _STR,
            "The link of a part that has one: connecting, up, degraded or down.",
        ),
        Spec("Site.Lines.<line>.LinkState", _STR, "The link to the line's sorter PLC."),
        Spec("Site.Lines.<line>.LinkUp", _BOOL, "LinkState is up."),
        Spec("Site.Lines.<line>.LineState", _STR, 'The PLC\'s PackML state ("" if none).'),
        Spec(
            "Site.Lines.<line>.HeartbeatAgeSeconds",
            _DBL,
            "Seconds since the PLC's heartbeat moved; no figure without a heartbeat.",
        ),
        Spec("Site.Lines.<line>.MailboxFull", _BOOL, "The PLC's telegram mailbox is full."),
        Spec("Site.Lines.<line>.OnBelt", _I32, "Parcels on the sorter belt."),
        Spec("Site.Lines.<line>.AtInspection", _I32, "Parcels at the inspection station."),
        Spec("Site.Lines.<line>.AwaitingReview", _I32, "Parcels waiting for an officer's review."),
        Spec("Site.Lines.<line>.OpenParcels", _I32, "OnBelt + AtInspection."),
        Spec(
            "Site.Lines.<line>.JournalBacklog",
            _I32,
            "Journal entries held while the journal refuses writes.",
        ),
        Spec("Site.Lines.<line>.Kpi.Decisions", _I64, "Lane decisions on this line."),
        Spec("Site.Lines.<line>.Kpi.Hits", _I64, "Parcels cleared within the target."),
        Spec("Site.Lines.<line>.Kpi.Misses", _I64, "Parcels whose target passed first."),
        Spec(
            "Site.Lines.<line>.Kpi.ShareWithinTarget",
            _DBL,
            "Hits / (Hits + Misses); no figure before the line's first verdict.",
        ),
        Spec(
            "Site.Lines.<line>.Lanes.<lane>.Kind",
            _STR,
            'release, inspection or exception ("" for a lane the site file does not name).',
        ),
        Spec(
            "Site.Lines.<line>.Lanes.<lane>.State",
            _STR,
            "available, full or blocked (the status word's number if unknown).",
        ),
        Spec(
            "Site.Lines.<line>.Lanes.<lane>.StatusWord",
            _I32,
            "The PLC's lane status word (0 available, 1 full, 2 blocked).",
        ),
        Spec("Site.Lines.<line>.Lanes.<lane>.Available", _BOOL, "StatusWord is 0."),
        Spec("Site.Lines.<line>.Lanes.<lane>.Decisions", _I64, "Parcels sent to this lane."),
    )
}


@dataclass(slots=True)
class _Keys:
    """Keys of one family in the order first seen, at most :data:`MAX_KEYS`."""

    family: str
    seen: dict[str, None] = field(default_factory=dict)
    refused: int = 0

    def add(self, key: str) -> bool:
        """Remember ``key``; False when the family is full and ``key`` is new (logged once)."""
        if key in self.seen:
            return True
        if len(self.seen) >= MAX_KEYS:
            if not self.refused:
                log.warning(
                    "SCADA: more than %d %s; %r and later ones get no nodes of their own",
                    MAX_KEYS,
                    self.family,
                    key,
                )
            self.refused += 1
            return False
        self.seen[key] = None
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.seen)


class Catalog:
    """The keys published so far, so that their node ids outlive the snapshot that named
    them. Seeded with the site file's lines and lanes (``lane_kinds``: line → lane → kind),
    so those nodes exist before the first PLC report."""

    def __init__(self, lane_kinds: Mapping[str, Mapping[int, str]] | None = None) -> None:
        self.lane_kinds = {line: dict(lanes) for line, lanes in (lane_kinds or {}).items()}
        self.lines = _Keys("lines")
        self.lanes: dict[str, _Keys] = {}
        self.alarms = _Keys("alarm sources")
        self.links = _Keys("links")
        for line, lanes in self.lane_kinds.items():
            if self.lines.add(line):
                for lane in sorted(lanes):
                    self.lanes_of(line).add(str(lane))

    def lanes_of(self, line: str) -> _Keys:
        return self.lanes.setdefault(line, _Keys(f"lanes on line {line}"))


def points(view: SiteView, catalog: Catalog, at: Moment) -> list[Point]:
    """Every point of ``view`` (taken at ``at``), with the keys ``catalog`` remembers; new
    keys in ``view`` are remembered from now on."""
    out: list[Point] = []
    put = _Putter(out)
    put("Site.Id", view.site)
    put("Site.SnapshotTime", at.wall)
    put("Site.ClockSeconds", view.controller.clock_s)
    _site_kpis(put, view)
    _alarms(put, view.alarms, catalog, at)
    put("Site.Journal.Rows", view.journal_rows)
    put("Site.Journal.Commits", view.journal_commits)
    forwarder = view.forwarder
    put("Site.Forwarder.Configured", forwarder is not None)
    put("Site.Forwarder.Connected", forwarder.connected if forwarder else None)
    put("Site.Forwarder.Backlog", forwarder.backlog if forwarder else None)
    put("Site.Forwarder.ShippedTotal", forwarder.shipped_total if forwarder else None)
    put("Site.Forwarder.Watermark", forwarder.watermark if forwarder else None)
    put("Site.Forwarder.LastError", (forwarder.last_error or "") if forwarder else None)
    put("Site.Risk.Results", view.risk_results)
    put("Site.Risk.Evicted", view.risk_results_evicted)
    for part in view.links:
        catalog.links.add(str(part))
    links = {str(part): state for part, state in view.links.items()}
    for part in catalog.links:
        put("Site.Links.<part>", _state(links.get(part)), part=part)
    _lines(put, view, catalog)
    return out


class _Putter:
    """Appends points, each value checked against its spec's kind."""

    def __init__(self, out: list[Point]) -> None:
        self._out = out

    def __call__(self, pattern: str, value: object, **keys: str) -> None:
        spec = SPECS[pattern]
        path = tuple(
            keys[s[1:-1]] if s.startswith("<") and s.endswith(">") else s for s in spec.segments
        )
        checked = value if value is KEEP else typed(spec.kind, value)
        self._out.append(Point(spec, path, checked))


def _site_kpis(put: _Putter, view: SiteView) -> None:
    kpis = view.kpis
    put("Site.Kpi.Decisions", kpis.decisions)
    put("Site.Kpi.DeadlineMisses", kpis.deadline_misses)
    put("Site.Kpi.Recirculations", kpis.recirculations)
    put("Site.Kpi.IllegalTransitions", kpis.illegal_transitions)
    hits, misses = _verdicts(kpis.overall)
    put("Site.Kpi.Verdicts", None if hits is None or misses is None else hits + misses)
    put("Site.Kpi.Hits", hits)
    put("Site.Kpi.Misses", misses)
    put("Site.Kpi.ShareWithinTarget", _share(hits, misses))
    put("Site.Kpi.TargetSeconds", kpis.target_s)
    put("Site.Kpi.VerdictsPending", kpis.pending)
    put("Site.Kpi.OpenParcels", view.controller.open_parcels)
    put("Site.Kpi.Holds", view.controller.holds)
    put("Site.Kpi.ReviewsWaiting", len(view.reviews))


def _alarms(put: _Putter, alarms: tuple[AlarmView, ...], catalog: Catalog, at: Moment) -> None:
    active = {str(a.source): a for a in alarms}
    put("Site.Alarms.ActiveCount", len(active))
    put("Site.Alarms.UnacknowledgedCount", sum(1 for a in alarms if not a.acknowledged_by))
    put("Site.Alarms.ActiveSources", list(active)[:MAX_KEYS])
    for source in active:
        catalog.alarms.add(source)
    for source in catalog.alarms:
        alarm = active.get(source)
        put("Site.Alarms.<source>.Active", alarm is not None, source=source)
        put("Site.Alarms.<source>.Severity", severity(source), source=source)
        if alarm is None:
            put("Site.Alarms.<source>.Message", KEEP, source=source)
            put("Site.Alarms.<source>.Since", KEEP, source=source)
            put("Site.Alarms.<source>.Acknowledged", False, source=source)
            put("Site.Alarms.<source>.AcknowledgedBy", "", source=source)
            put("Site.Alarms.<source>.Comment", "", source=source)
            continue
        put("Site.Alarms.<source>.Message", alarm.message, source=source)
        put("Site.Alarms.<source>.Since", _wall_of(at, alarm.since), source=source)
        put("Site.Alarms.<source>.Acknowledged", bool(alarm.acknowledged_by), source=source)
        put("Site.Alarms.<source>.AcknowledgedBy", alarm.acknowledged_by, source=source)
        put("Site.Alarms.<source>.Comment", alarm.comment, source=source)


def _lines(put: _Putter, view: SiteView, catalog: Catalog) -> None:
    present = {str(seen.line): seen for seen in view.controller.lines}
    for line_id, seen in present.items():
        if catalog.lines.add(line_id):
            for number in seen.lanes:
                catalog.lanes_of(line_id).add(str(number))
    by_lane = view.kpis.by_lane
    by_line = view.kpis.by_line
    for line_id in catalog.lines:
        line = present.get(line_id)
        _line(put, line_id, line)
        prefix = f"{line_id}/"
        decisions = sum(
            n for key, n in by_lane.items() if str(key).startswith(prefix) and _int(n) is not None
        )
        share = by_line.get(line_id)
        hits, misses = _verdicts(share) if share is not None else (0, 0)
        put("Site.Lines.<line>.Kpi.Decisions", decisions, line=line_id)
        put("Site.Lines.<line>.Kpi.Hits", hits, line=line_id)
        put("Site.Lines.<line>.Kpi.Misses", misses, line=line_id)
        put("Site.Lines.<line>.Kpi.ShareWithinTarget", _share(hits, misses), line=line_id)
        kinds = catalog.lane_kinds.get(line_id, {})
        statuses = {str(lane): word for lane, word in line.lanes.items()} if line else {}
        for lane in catalog.lanes_of(line_id):
            keys = {"line": line_id, "lane": lane}
            put("Site.Lines.<line>.Lanes.<lane>.Kind", _lane_kind(kinds, lane), **keys)
            word = _int(statuses.get(lane, LaneStatus.AVAILABLE)) if line else None
            put("Site.Lines.<line>.Lanes.<lane>.State", _lane_state(word), **keys)
            put("Site.Lines.<line>.Lanes.<lane>.StatusWord", word, **keys)
            available = None if word is None else word == LaneStatus.AVAILABLE
            put("Site.Lines.<line>.Lanes.<lane>.Available", available, **keys)
            put("Site.Lines.<line>.Lanes.<lane>.Decisions", by_lane.get(prefix + lane, 0), **keys)


def _line(put: _Putter, line_id: str, line: LineView | None) -> None:
    """The line's own figures; none at all when the snapshot lacks the line."""
    health = line.health if line else None
    link = _state(health.link) if health else None
    put("Site.Lines.<line>.LinkState", link, line=line_id)
    put("Site.Lines.<line>.LinkUp", None if link is None else link == LinkState.UP, line=line_id)
    put("Site.Lines.<line>.LineState", health.line_state if health else None, line=line_id)
    age = health.heartbeat_age_s if health else None
    put("Site.Lines.<line>.HeartbeatAgeSeconds", age, line=line_id)
    put("Site.Lines.<line>.MailboxFull", health.mailbox_full if health else None, line=line_id)
    on_belt = line.on_belt if line else None
    at_inspection = line.at_inspection if line else None
    put("Site.Lines.<line>.OnBelt", on_belt, line=line_id)
    put("Site.Lines.<line>.AtInspection", at_inspection, line=line_id)
    put("Site.Lines.<line>.AwaitingReview", line.awaiting_review if line else None, line=line_id)
    belt, inspection = _int(on_belt), _int(at_inspection)
    open_parcels = None if belt is None or inspection is None else belt + inspection
    put("Site.Lines.<line>.OpenParcels", open_parcels, line=line_id)
    put("Site.Lines.<line>.JournalBacklog", line.journal_backlog if line else None, line=line_id)


# --- values ------------------------------------------------------------------------------


def typed(kind: Kind, value: object) -> object:
    """``value`` as ``kind``'s Python type, or None when it is no such value (a stray type,
    NaN, a time before 1601). Integers beyond the type's range are held at its bounds and
    strings cut at :data:`STRING_MAX`: a figure is shown, never refused."""
    match kind:
        case Kind.INT32 | Kind.INT64:
            whole = _int(value)
            if whole is None:
                return None
            bound = INT32_MAX if kind is Kind.INT32 else INT64_MAX
            return max(-bound - 1, min(bound, whole))
        case Kind.DOUBLE:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            try:
                number = float(value)
            except OverflowError:
                return math.inf if value > 0 else -math.inf
            return None if math.isnan(number) else number
        case Kind.BOOLEAN:
            return value if isinstance(value, bool) else None
        case Kind.STRING:
            return _text(value)
        case Kind.DATETIME:
            if not isinstance(value, datetime) or value.tzinfo is None or value < _EARLIEST:
                return None
            return value.astimezone(UTC)
        case Kind.STRING_ARRAY:
            if not isinstance(value, list | tuple):
                return None
            texts = [_text(v) for v in value]
            return [t for t in texts if t is not None]


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int) else None


def _text(value: object) -> str | None:
    if value is None or not isinstance(value, str | int | float):
        return None
    # A lone surrogate (typed into a comment) is not UTF-8: escaped, so a read never fails.
    return str(value)[:STRING_MAX].encode("utf-8", "backslashreplace").decode()


def _state(state: object) -> str | None:
    """A link state's name (``up``); None for no state."""
    return None if state is None else str(state.value if isinstance(state, LinkState) else state)


def _verdicts(share: object) -> tuple[int | None, int | None]:
    if not isinstance(share, Share):
        return None, None
    return _int(share.hits), _int(share.misses)


def _share(hits: int | None, misses: int | None) -> float | None:
    if hits is None or misses is None or hits < 0 or misses < 0 or hits + misses == 0:
        return None
    return hits / (hits + misses)


def _lane_kind(kinds: Mapping[int, str], lane: str) -> str:
    try:
        return str(kinds.get(int(lane), ""))
    except ValueError:
        return ""


def _lane_state(word: int | None) -> str | None:
    if word is None:
        return None
    try:
        return LaneStatus(word).name.lower()
    except ValueError:
        return str(word)


def _wall_of(at: Moment, clock_s: object) -> datetime | None:
    """The wall time of an instant on the controller's clock; None when it is no time."""
    if isinstance(clock_s, bool) or not isinstance(clock_s, int | float):
        return None
    try:
        return at.wall_of(float(clock_s))
    except (OverflowError, ValueError):
        return None
