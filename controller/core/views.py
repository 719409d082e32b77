"""Read models: frozen snapshots of what the floor sees, for every reader alike.

The terminal view, the console, metrics and tests read these instead of poking at the
controller's live objects: a snapshot is taken on the event loop in one go, is immutable
afterwards, and can be handed to another task or thread, rendered or serialised at leisure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.core.domain import LaneStatus, RiskResult, XrayResult
from controller.core.holds import Hold
from controller.core.link import LinkState


@dataclass(frozen=True, slots=True)
class Share:
    """Clearance verdicts: parcels cleared within the target (hits) and not (misses)."""

    hits: int = 0
    misses: int = 0

    @property
    def verdicts(self) -> int:
        return self.hits + self.misses

    @property
    def share(self) -> float | None:
        """The share within the target, or None before the first verdict."""
        return self.hits / self.verdicts if self.verdicts else None


@dataclass(frozen=True, slots=True)
class KpiView:
    """The clearance figures at one moment.

    ``by_hour`` is keyed by the hour on the KPI clock (``int(t // 3600)``: the hour of the
    day when the clock counts from midnight, as the twin's does); ``by_lane`` counts
    decisions per ``"line/lane"``.
    """

    target_s: float
    overall: Share
    rolling: Mapping[str, Share]
    by_hour: Mapping[int, Share]
    by_line: Mapping[str, Share]
    buckets: Mapping[str, int]
    """Cleared parcels by clearance time, in this order: within the target, up to twice it,
    beyond (the keys name the ranges for people)."""
    cleared_s_sum: float
    by_lane: Mapping[str, int]
    by_reason: Mapping[str, int]
    by_state: Mapping[str, int]
    pending: int
    decisions: int
    deadline_misses: int
    recirculations: int
    illegal_transitions: int

    def as_dict(self) -> dict[str, object]:
        """The same figures as plain JSON data (reports, the twin's kpis.json)."""
        return {
            "share_within_target": self.overall.share,
            "rolling": {window: s.share for window, s in self.rolling.items()},
            "by_hour": {str(hour): s.share for hour, s in self.by_hour.items()},
            "by_line": {line: s.share for line, s in self.by_line.items()},
            "verdicts": self.overall.verdicts,
            "pending": self.pending,
            "buckets": dict(self.buckets),
            "decisions": self.decisions,
            "deadline_misses": self.deadline_misses,
            "recirculations": self.recirculations,
            "illegal_transitions": self.illegal_transitions,
            "by_lane": dict(self.by_lane),
            "by_reason": dict(self.by_reason),
            "by_state": dict(self.by_state),
        }


@dataclass(frozen=True, slots=True)
class SorterHealth:
    """What a sorter adapter tells of its PLC, read without touching its client."""

    link: LinkState
    line_state: str = ""
    """The PLC's PackML state name; "" when the PLC does not report one."""
    heartbeat_age_s: float | None = None
    """Seconds since the PLC's heartbeat last moved; None without a heartbeat."""
    mailbox_full: bool = False
    """The PLC says its telegram mailbox is full: news about parcels waits in its backlog
    (the controller is behind), so no parcel counts as silent meanwhile."""


@dataclass(frozen=True, slots=True)
class LineView:
    line: str
    health: SorterHealth
    lanes: Mapping[int, LaneStatus]
    """The PLC's lane status words; a lane not listed is available."""
    on_belt: int
    at_inspection: int
    awaiting_review: int
    journal_backlog: int = 0
    """Journal entries the line holds that the journal has not taken yet (an outage's
    backlog, written in order once it takes writes again)."""


@dataclass(frozen=True, slots=True)
class AlarmView:
    source: str
    message: str
    since: float
    acknowledged_by: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ParcelView:
    """One open parcel, as track and trace shows it."""

    line: str
    tracking_id: int
    hawb: str
    state: str
    arrived_at: float
    laps: int


@dataclass(frozen=True, slots=True)
class ControllerView:
    """Everything the controller itself knows at one moment."""

    clock_s: float
    kpis: KpiView
    lines: tuple[LineView, ...]
    holds: int
    open_parcels: int
    oldest_open: tuple[ParcelView, ...] = field(default=())
    """The open parcels that arrived first (the ones a floor operator should look at)."""


@dataclass(frozen=True, slots=True)
class ReviewView:
    """A parcel waiting for an officer's on-screen review, with the evidence it was sent
    for; the review station lists these by ``deadline`` (when the parcel goes to
    inspection without a verdict)."""

    line: str
    tracking_id: int
    hawb: str
    arrived_at: float
    deadline: float
    risk: RiskResult | None
    xray: XrayResult


@dataclass(frozen=True, slots=True)
class ForwarderView:
    """The central-database forwarder: ``backlog`` is the local rows not yet confirmed
    centrally."""

    connected: bool
    last_error: str | None
    backlog: int
    shipped_total: int
    watermark: int


@dataclass(frozen=True, slots=True)
class XrayView:
    """The on-site inference service's counters (absent when the site scores no images)."""

    state: str
    images: int
    failures: int
    restarts: int
    last_run_s: float


@dataclass(frozen=True, slots=True)
class SiteView:
    """One site at one moment: the controller's read model and the services around it.
    Taken on the event loop in one go; what the terminal view, the console, the metrics
    endpoint and the live stream all read."""

    site: str
    controller: ControllerView
    risk_results: int
    risk_results_evicted: int
    """Results the risk book's bound let go (their parcels, if still to come, are inspected)."""
    journal_rows: int
    journal_commits: int
    forwarder: ForwarderView | None
    plant: Mapping[str, int] = field(default_factory=dict)
    links: Mapping[str, LinkState] = field(default_factory=dict)
    alarms: tuple[AlarmView, ...] = ()
    reviews: tuple[ReviewView, ...] = ()
    holds: tuple[Hold, ...] = ()
    xray: XrayView | None = None

    @property
    def kpis(self) -> KpiView:
        return self.controller.kpis

    @property
    def open_parcels(self) -> int:
        return self.controller.open_parcels
