"""What the HTTP API sends and accepts: pydantic models, so the OpenAPI document is exact.

Each response model is built from the core's read models (:mod:`controller.core.views`,
:mod:`controller.core.audit`) by one ``of`` function; nothing here reads live objects.
Times on the controller's clock are ``*_s`` seconds; wall-clock times are ISO-8601 UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.core.audit import AuditRecord
from controller.core.domain import InspectionOutcome, ReviewOutcome
from controller.core.holds import Hold
from controller.core.reasons import Reason
from controller.core.users import Permission, Role
from controller.core.views import (
    AlarmView,
    KpiView,
    LineView,
    ParcelView,
    ReviewView,
    Share,
    SiteView,
)

Severity = Literal["critical", "warning", "info"]

_CRITICAL = ("plc-link", "plc-heartbeat", "telegrams-lost", "journal", "recovery")
_INFO = ("conflict",)


def severity(source: str) -> Severity:
    """How urgent an alarm is, by what raised it: a line or the journal at risk is critical,
    a conflicting risk result is for information, anything else a warning."""
    if any(word in source for word in _CRITICAL):
        return "critical"
    if any(word in source for word in _INFO):
        return "info"
    return "warning"


@dataclass(frozen=True, slots=True)
class Moment:
    """One instant on both clocks: the controller's (``clock_s``, hub time, which may run
    ``speed`` times faster than the wall's on a twin) and the wall's."""

    clock_s: float
    wall: datetime
    speed: float = 1.0

    def wall_of(self, clock_s: float) -> datetime:
        """The wall time of an instant on the controller's clock."""
        return self.wall - timedelta(seconds=(self.clock_s - clock_s) / self.speed)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorOut(_Out):
    """Every error: what went wrong, and the request field it concerns when there is one."""

    error: str
    field: str | None = None


# --- sessions -------------------------------------------------------------------------------


class LoginIn(_In):
    user: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class SessionOut(_Out):
    site: str
    user: str
    role: Role
    permissions: list[Permission]
    csrf: str
    """Send it back in the ``X-CSRF-Token`` header with every POST."""
    expires_at: datetime


# --- KPIs -----------------------------------------------------------------------------------


class ShareOut(_Out):
    hits: int
    misses: int
    share: float | None

    @classmethod
    def of(cls, share: Share) -> ShareOut:
        return cls(hits=share.hits, misses=share.misses, share=share.share)


class HourOut(ShareOut):
    hour: int


class KpisOut(_Out):
    target_s: float
    overall: ShareOut
    rolling: dict[str, ShareOut]
    by_hour: list[HourOut]
    by_line: dict[str, ShareOut]
    buckets: dict[str, int]
    by_lane: dict[str, int]
    by_reason: dict[str, int]
    by_state: dict[str, int]
    pending: int
    decisions: int
    deadline_misses: int
    recirculations: int
    illegal_transitions: int

    @classmethod
    def of(cls, kpis: KpiView) -> KpisOut:
        return cls(
            target_s=kpis.target_s,
            overall=ShareOut.of(kpis.overall),
            rolling={w: ShareOut.of(s) for w, s in kpis.rolling.items()},
            by_hour=[
                HourOut(hour=h, hits=s.hits, misses=s.misses, share=s.share)
                for h, s in kpis.by_hour.items()
            ],
            by_line={line: ShareOut.of(s) for line, s in kpis.by_line.items()},
            buckets=dict(kpis.buckets),
            by_lane=dict(kpis.by_lane),
            by_reason=dict(kpis.by_reason),
            by_state=dict(kpis.by_state),
            pending=kpis.pending,
            decisions=kpis.decisions,
            deadline_misses=kpis.deadline_misses,
            recirculations=kpis.recirculations,
            illegal_transitions=kpis.illegal_transitions,
        )


# --- lines, alarms, parcels ------------------------------------------------------------------


class LaneOut(_Out):
    id: int
    kind: str
    status: str
    """The PLC's status word for the lane: available, full or blocked."""
    decided: int
    """Parcels sent to this lane since the controller started."""
    per_min: float | None
    """Parcels per minute sent to this lane over the last minute (None until measured)."""


class LineOut(_Out):
    line: str
    link: str
    state: str
    heartbeat_age_s: float | None
    on_belt: int
    at_inspection: int
    awaiting_review: int
    share: ShareOut | None
    lanes: list[LaneOut]


class AlarmOut(_Out):
    source: str
    message: str
    severity: Severity
    since_s: float
    since: datetime
    acknowledged_by: str
    comment: str

    @classmethod
    def of(cls, alarm: AlarmView, at: Moment) -> AlarmOut:
        return cls(
            source=alarm.source,
            message=alarm.message,
            severity=severity(alarm.source),
            since_s=alarm.since,
            since=at.wall_of(alarm.since),
            acknowledged_by=alarm.acknowledged_by,
            comment=alarm.comment,
        )


class ParcelOut(_Out):
    line: str
    tracking_id: int
    hawb: str
    state: str
    arrived_at_s: float
    arrived_at: datetime
    age_s: float
    """Seconds since the scan on the hub's clock (what the 150 s target counts)."""
    laps: int

    @classmethod
    def of(cls, parcel: ParcelView, at: Moment) -> ParcelOut:
        return cls(
            line=parcel.line,
            tracking_id=parcel.tracking_id,
            hawb=parcel.hawb,
            state=parcel.state,
            arrived_at_s=parcel.arrived_at,
            arrived_at=at.wall_of(parcel.arrived_at),
            age_s=at.clock_s - parcel.arrived_at,
            laps=parcel.laps,
        )


class HoldOut(_Out):
    hawb: str
    reason: str
    user: str
    since_s: float
    since: datetime

    @classmethod
    def of(cls, hold: Hold, at: Moment) -> HoldOut:
        return cls(
            hawb=hold.hawb,
            reason=hold.reason,
            user=hold.user,
            since_s=hold.since,
            since=at.wall_of(hold.since),
        )


class RiskOut(_Out):
    channel: str
    score: float
    declared_goods: str
    flight: str


class ThresholdOut(_Out):
    """A class's policy thresholds: below ``clear`` clean, from ``alarm`` on an alarm, in
    between ambiguous (what an officer reviews)."""

    clear: float
    alarm: float


class XrayOut(_Out):
    status: str
    scores: dict[str, float]
    thresholds: dict[str, ThresholdOut]
    model_version: str
    detail: str


class ReviewOut(_Out):
    """A parcel waiting for an officer's verdict; ``time_left_s`` is wall seconds until it
    goes to inspection without one, out of ``window_s`` from its scan."""

    line: str
    tracking_id: int
    hawb: str
    deadline_s: float
    time_left_s: float
    window_s: float
    risk: RiskOut | None
    xray: XrayOut
    image: bool
    """Whether the scanner's image is at hand
    (``GET /api/v1/images/{hawb}?tracking_id=...``)."""
    energies: int
    """How many energies the image has: 2 for a dual-energy scanner, 1, or 0 without one."""

    @classmethod
    def of(
        cls,
        review: ReviewView,
        at: Moment,
        thresholds: Mapping[str, ThresholdOut],
        energies: int,
    ) -> ReviewOut:
        risk = review.risk
        xray = review.xray
        return cls(
            line=review.line,
            tracking_id=review.tracking_id,
            hawb=review.hawb,
            deadline_s=review.deadline,
            time_left_s=max(0.0, (review.deadline - at.clock_s) / at.speed),
            window_s=max(0.0, (review.deadline - review.arrived_at) / at.speed),
            risk=None
            if risk is None
            else RiskOut(
                channel=str(risk.channel),
                score=risk.score,
                declared_goods=risk.declared_goods,
                flight=risk.flight,
            ),
            xray=XrayOut(
                status=str(xray.status),
                scores=dict(xray.scores),
                thresholds={c: t for c, t in thresholds.items() if c in xray.scores},
                model_version=xray.model_version,
                detail=xray.detail,
            ),
            image=energies > 0,
            energies=energies,
        )


class ForwarderOut(_Out):
    connected: bool
    last_error: str | None
    backlog: int
    shipped_total: int


class OverviewOut(_Out):
    """The floor at one moment: what the overview page shows and the live stream sends."""

    site: str
    clock_s: float
    taken_at: datetime
    speed: float
    """Hub seconds per wall second (1 on a site; more when a twin plays the plant faster)."""
    kpis: KpisOut
    lines: list[LineOut]
    links: dict[str, str]
    alarms: list[AlarmOut]
    reviews: list[ReviewOut]
    open_parcels: int
    oldest_open: list[ParcelOut]
    holds: int
    journal_rows: int
    forwarder: ForwarderOut | None
    plant: dict[str, int]


def lines_of(
    view: SiteView,
    lane_kinds: Mapping[str, Mapping[int, str]],
    rates: Mapping[str, float],
) -> list[LineOut]:
    """Each line with its lanes: kind from the site file, status from the PLC, decisions and
    parcels per minute (``rates`` keyed ``"line/lane"``) from the KPIs."""
    kpis = view.kpis
    return [
        _line(line, lane_kinds.get(line.line, {}), kpis, rates) for line in view.controller.lines
    ]


def _line(
    line: LineView, kinds: Mapping[int, str], kpis: KpiView, rates: Mapping[str, float]
) -> LineOut:
    lanes = [
        LaneOut(
            id=lane,
            kind=kind,
            status=line.lanes[lane].name.lower() if lane in line.lanes else "available",
            decided=kpis.by_lane.get(f"{line.line}/{lane}", 0),
            per_min=rates.get(f"{line.line}/{lane}"),
        )
        for lane, kind in kinds.items()
    ]
    share = kpis.by_line.get(line.line)
    return LineOut(
        line=line.line,
        link=str(line.health.link),
        state=line.health.line_state,
        heartbeat_age_s=line.health.heartbeat_age_s,
        on_belt=line.on_belt,
        at_inspection=line.at_inspection,
        awaiting_review=line.awaiting_review,
        share=None if share is None else ShareOut.of(share),
        lanes=lanes,
    )


# --- the audit ------------------------------------------------------------------------------


class ReasonOut(_Out):
    code: int
    name: str


class RecordOut(_Out):
    """One journal entry: what happened, to which parcel, why, by whom and when."""

    seq: int
    wall_time: datetime
    ts: float
    kind: str
    line: str
    tracking_id: int
    hawb: str
    state_from: str
    state_to: str
    destination: str
    lane: int | None
    reasons: list[ReasonOut]
    policy_version: str
    user: str
    data: dict[str, object]

    @classmethod
    def of(cls, record: AuditRecord) -> RecordOut:
        return cls(
            seq=record.seq,
            wall_time=record.wall_time,
            ts=record.ts,
            kind=str(record.kind),
            line=record.line,
            tracking_id=record.tracking_id,
            hawb=record.hawb,
            state_from=record.state_from,
            state_to=record.state_to,
            destination=record.destination,
            lane=record.lane,
            reasons=[ReasonOut(code=code, name=_reason_name(code)) for code in record.reasons],
            policy_version=record.policy_version,
            user=record.user,
            data=dict(record.data),
        )


def _reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


class ReasonListOut(_Out):
    reasons: list[ReasonOut]


class AuditPageOut(_Out):
    total: int
    records: list[RecordOut]


# --- commands -------------------------------------------------------------------------------

_Hawb = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$")]
_Why = Annotated[str, Field(min_length=1, max_length=500)]
_Note = Annotated[str, Field(max_length=500)]


class HoldIn(_In):
    hawb: _Hawb
    reason: _Why


class LiftIn(_In):
    reason: _Why


class InspectionIn(_In):
    hawb: _Hawb
    outcome: InspectionOutcome
    note: _Note = ""


class VerdictIn(_In):
    outcome: ReviewOutcome
    hawb: _Hawb
    """The HAWB the officer looked at: a tracking id that now names another parcel refuses."""
    note: _Note = ""


class AckIn(_In):
    source: Annotated[str, Field(min_length=1, max_length=200)]
    comment: _Note = ""


class CloseIn(_In):
    reason: _Why


class CommandOut(_Out):
    accepted: bool
    message: str


class InspectionOut(CommandOut):
    """An inspection recorded: the parcel closed, with its clearance time (seconds on the
    hub's clock from scan to this outcome, the figure the 150 s target counts)."""

    clearance_s: float | None = None


class HealthOut(_Out):
    status: Literal["ok", "starting", "degraded"]
    links: dict[str, str] = Field(default_factory=dict)
