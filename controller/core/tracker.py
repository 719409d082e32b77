"""The line tracker: every rule of the decision flow for one sorter line, stated once, sans-IO.

Events go in as method calls — a destination request, the evidence (risk and X-ray results),
an officer's review, the decision made durable, a divert confirmation, an operator's command,
a periodic tick — each with the time it happened; the tracker answers with :data:`Effect`
values for its driver to carry out: gather evidence until a cutoff, ask an officer, journal
entries, reply to the sorter, abandon a parcel's pending work, raise or clear an alarm. It
never awaits, sleeps or reads a clock, so the asyncio controller (:mod:`controller.lines`)
drives it in production and the digital twin's fast fidelity drives the very same object
from SimPy events.

The decision flow, for each destination request:

1. admit the parcel (a first scan opens it; a recirculating parcel comes round for another
   lap; anything else means tracking cannot be trusted and the parcel closes as exception);
2. a malformed telegram, a no-read or the lap limit decides at once (exception); otherwise
   gather the evidence until the cutoff (the deadline minus the reply budget) — what is not in
   by then counts as missing or late;
3. decide by the policy, first asking an officer while time remains when only a review can
   lift the reasons to inspect;
4. choose the lane (the decided kind with the most spare capacity, else exception), journal
   the decision, and reply only once the entry is durable and the deadline has not passed;
   otherwise the PLC's default lane stands and the miss is journalled.

Tracking is watched too: a parcel on the belt that goes ``confirm_timeout_s`` of running
belt (ticks with the line running) without a telegram from the PLC — its confirmation, its
next lap's request — closes as lost tracking, and so does an open parcel whose tracking id a
new destination request carries before its confirmation (a PLC restart reusing ids): the new
request is then served as the new parcel it is. Either raises the line's ``lost-tracking``
alarm once; it clears once the PLC has confirmed parcels again and a whole timeout has
passed with none lost.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel

from controller.core.commands import ForceClose, RecordInspection, RecordVerdict
from controller.core.domain import (
    NO_DATA,
    Decision,
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    EntryKind,
    JournalEntry,
    LaneKind,
    LaneStatus,
    ReviewOutcome,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Holds
from controller.core.kpi import Kpis
from controller.core.lifecycle import (
    AFTER_DIVERT,
    AFTER_INSPECTION,
    TRANSITIONS,
    IllegalTransitionError,
    Parcel,
    ParcelState,
)
from controller.core.policy import DecisionPolicy, PolicyInputs
from controller.core.ports import ReviewRequest
from controller.core.reasons import Reason
from controller.core.settings import Lane, Line
from controller.core.views import ReviewView

# --- effects: what the driver must do --------------------------------------------------------
# Named tuples, not frozen dataclasses: several are made per parcel at line rate.


class Gather(NamedTuple):
    """Fetch the parcel's risk and X-ray results until ``cutoff``, then call
    :meth:`LineTracker.evidence` with what came (None for what did not)."""

    tracking_id: int
    hawb: str
    cutoff: float


class AskReview(NamedTuple):
    """Ask an officer until ``request.deadline``, then call :meth:`LineTracker.reviewed`
    (None if no verdict came). A verdict command may answer first."""

    request: ReviewRequest


class Record(NamedTuple):
    """Journal ``entries``. With ``awaiting`` set, call :meth:`LineTracker.journalled` for
    that tracking id once they are durable (or the write failed): the reply waits on it.
    Those calls come in the order the records were made (a journal writes in order)."""

    entries: tuple[JournalEntry, ...]
    awaiting: int | None = None


class Reply(NamedTuple):
    """Write ``reply`` to the sorter now; ``reasons`` are every reason for the decision."""

    reply: DestinationReply
    reasons: tuple[Reason, ...]


class Abandon(NamedTuple):
    """Stop gathering evidence or waiting for a review for this parcel: it is settled."""

    tracking_id: int


class Alarm(NamedTuple):
    """Raise (``active``) or clear the line's alarm ``what`` (source ``<line>/<what>``)."""

    what: str
    message: str
    active: bool


Effect = Gather | AskReview | Record | Reply | Abandon | Alarm


class Phase(Enum):
    GATHERING = "gathering"
    REVIEWING = "reviewing"
    JOURNALLING = "journalling"


@dataclass(slots=True)
class _Pending:
    """A parcel between its destination request and its reply (or miss)."""

    parcel: Parcel
    deadline: float
    cutoff: float
    request_seq: int  # the request answered: its reply names it (DestinationReply.request_seq)
    phase: Phase = Phase.GATHERING
    inputs: PolicyInputs | None = None
    decision: Decision | None = None
    lane: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A command the lifecycle does not allow now, and why."""

    message: str


@dataclass(slots=True)
class Planned:
    """An accepted command: journal ``entry`` durably first, then call ``commit``."""

    entry: JournalEntry
    commit: Callable[[float], list[Effect] | Refused] = field(repr=False)
    """Apply the command at the given time, or refuse it if the parcel moved on meanwhile."""


# Module constants for the hot path: an enum member looked up on its class costs a dictionary
# walk per use, and an enum's .name or .value is a property call.
_TRANSITION, _CONFIRMATION = EntryKind.TRANSITION, EntryKind.CONFIRMATION
_DECISION, _DEADLINE_MISS = EntryKind.DECISION, EntryKind.DEADLINE_MISS
_SCANNED, _DECIDED, _DEFAULTED = ParcelState.SCANNED, ParcelState.DECIDED, ParcelState.DEFAULTED
_EXCEPTION, _RECIRCULATING = ParcelState.EXCEPTION, ParcelState.RECIRCULATING
_IN_INSPECTION = ParcelState.IN_INSPECTION
_AVAILABLE = LaneStatus.AVAILABLE
_INSPECTION, _RELEASE = LaneKind.INSPECTION, LaneKind.RELEASE
_TO_EXCEPTION = LaneKind.EXCEPTION
_GATHERING, _REVIEWING, _JOURNALLING = Phase.GATHERING, Phase.REVIEWING, Phase.JOURNALLING
_DEFAULTED_BY_PLC, _LOST_TRACKING = DivertStatus.DEFAULTED, DivertStatus.LOST_TRACKING
_LATE = XrayStatus.LATE
_LOST_TRACKING_REASON = Reason.LOST_TRACKING
_LOST_TRACKING_ALARM = "lost-tracking"
_UNKNOWN_PARCEL, _UNKNOWN_LANE = "unknown-parcel", "unknown-lane"  # confirmation alarms
_SCANNED_VALUE, _DEFAULTED_VALUE = _SCANNED.value, _DEFAULTED.value
_NO_ALARM: tuple[Effect, ...] = ()

_STATUS_NAMES = {status: status.name for status in DivertStatus}  # an enum's .name is slow

# Builders for the named tuples made several times per parcel: calling a named tuple's class
# runs its Python-level __new__, which costs as much again as the tuple itself, so these
# build the tuple directly from all its fields, in order. The stubs give the fields' types.
if TYPE_CHECKING:

    def _journal_entry(
        fields: tuple[
            float,  # ts
            EntryKind,  # kind
            str,  # line
            int,  # tracking_id
            str,  # hawb
            str,  # state_from
            str,  # state_to
            str,  # destination
            int | None,  # lane
            tuple[Reason, ...],  # reasons
            str,  # policy_version
            Mapping[str, object],  # data
        ],
        /,
    ) -> JournalEntry: ...

    def _record(fields: tuple[tuple[JournalEntry, ...], int | None], /) -> Record: ...
    def _gather(fields: tuple[int, str, float], /) -> Gather: ...
    def _reply(fields: tuple[DestinationReply, tuple[Reason, ...]], /) -> Reply: ...
    def _destination_reply(
        fields: tuple[str, int, int, Reason, int | None], /
    ) -> DestinationReply: ...
    def _policy_inputs(
        fields: tuple[bool, RiskResult | None, XrayResult, bool, float, ReviewOutcome | None], /
    ) -> PolicyInputs: ...

else:
    _journal_entry = partial(tuple.__new__, JournalEntry)
    _record = partial(tuple.__new__, Record)
    _gather = partial(tuple.__new__, Gather)
    _reply = partial(tuple.__new__, Reply)
    _destination_reply = partial(tuple.__new__, DestinationReply)
    _policy_inputs = partial(tuple.__new__, PolicyInputs)

_RECIRCULATED = {
    DivertStatus.MISSED: Reason.DIVERT_MISSED,
    DivertStatus.LANE_FULL: Reason.LANE_FULL,
}


class LaneLoad:
    """Parcels sent to each lane over the last ``window_s``, as a share of its capacity."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._sent: dict[int, deque[float]] = {}

    def assigned(self, lane: int, now: float) -> None:
        sent = self._sent.get(lane)
        if sent is None:  # not setdefault: that would build a deque per call
            sent = self._sent[lane] = deque()
        sent.append(now)
        # Trimmed in batches, once the oldest is two windows old (utilisation() trims exactly
        # before it counts): a lane never asked about stays bounded without a trim per parcel.
        if sent[0] < now - 2 * self.window_s:
            self._trim(sent, now)

    def utilisation(self, lane: Lane, now: float) -> float:
        sent = self._sent.get(lane.id)
        if not sent:
            return 0.0
        self._trim(sent, now)
        return len(sent) / (lane.capacity_per_h * self.window_s / 3600)

    def _trim(self, sent: deque[float], now: float) -> None:
        oldest = now - self.window_s
        while sent and sent[0] < oldest:
            sent.popleft()


class LineTracker:
    """Tracks and decides every parcel of one line. Not thread-safe; never blocks.

    ``lane_status`` reads the PLC's latest lane status words (lanes not listed are available);
    ``ask_reviews`` says whether anyone reviews images on screen (else no review is asked).
    """

    def __init__(
        self,
        line: Line,
        policy: DecisionPolicy,
        kpis: Kpis,
        holds: Holds,
        lane_status: Callable[[], Mapping[int, LaneStatus]],
        ask_reviews: bool = False,
    ) -> None:
        self.line = line
        self.policy = policy
        self.kpis = kpis
        self.holds = holds
        self.lane_status = lane_status
        self.ask_reviews = ask_reviews
        self.rng = random.Random(f"{policy.settings.seed}/{line.id}")
        self.on_belt: dict[int, Parcel] = {}
        self.in_inspection: dict[str, deque[Parcel]] = {}
        self.pending: dict[int, _Pending] = {}
        self.load = LaneLoad()
        # Read once from the (frozen) line settings, not per parcel: a pydantic model's
        # attribute costs a Python-level __getattr__ hook per read.
        self._line_id = line.id
        self._lap_limit = line.lap_limit
        self._to_scan = line.belt.induct_to_scan_s
        self._lane_kind = {lane.id: lane.kind for lane in line.lanes}
        self._lanes_of = {
            kind: tuple((lane.id, lane) for lane in line.lanes_of(kind)) for kind in LaneKind
        }
        self._window = line.belt.decision_window_s
        self._cutoff = line.belt.decision_window_s - line.reply_budget_s
        # Tracking watch (see tick()): when each parcel on the belt counts as lost, on the
        # belt clock (this clock less the time the line stood still), oldest first.
        self._timeout = line.confirm_timeout
        self._silent: dict[int, tuple[float, Parcel]] = {}
        self._stood_s = 0.0  # time the line stood still (link down, not running), from ticks
        self._ticked_at: float | None = None
        self._orphans: dict[int, int] = {}  # journalled() calls owed for settled parcels
        self._confirmed_at = float("-inf")  # the latest divert confirmation
        self._lost_at: float | None = None  # the latest loss while the alarm is up, else None
        self._lost = 0  # parcels lost since the alarm went up
        self._raised: set[str] = set()  # confirmation alarms up (unknown parcel, unknown lane)

    # --- destination requests ----------------------------------------------------------

    def request(self, request: DestinationRequest, now: float) -> list[Effect]:
        if request.redelivered and self._applied(request):
            return []
        open_parcel = self.on_belt.get(request.tracking_id)
        if open_parcel is not None and _reused(open_parcel, request.barcode):
            why = (
                f"a new destination request (seq {request.seq}, barcode {request.barcode!r}) "
                f"came with its tracking id while it was {open_parcel.state.value}"
            )
            lost = self._lose(open_parcel, now, Reason.TRACKING_ID_REUSED, why)
            return [*lost, *self.request(request, now)]  # now a first scan
        parcel, entries = self._admit(request, now)
        scan_time = request.scan_time
        pending = _Pending(parcel, scan_time + self._window, scan_time + self._cutoff, request.seq)
        self.pending[parcel.tracking_id] = pending
        version = self.policy.version
        if request.fault:
            decision = Decision(_TO_EXCEPTION, (Reason.MALFORMED_TELEGRAM,), version)
            return self._decide(pending, decision, {"fault": request.fault}, now, entries)
        if not parcel.hawb:  # never read, on this lap or an earlier one
            decision = Decision(_TO_EXCEPTION, (Reason.NO_READ,), version)
            return self._decide(pending, decision, {"no_read": True}, now, entries)
        if parcel.laps >= self._lap_limit:
            decision = Decision(_TO_EXCEPTION, (Reason.LAP_LIMIT,), version)
            return self._decide(pending, decision, {"laps": parcel.laps}, now, entries)
        return [
            _record((entries, None)),
            _gather((parcel.tracking_id, parcel.hawb, pending.cutoff)),
        ]

    def _admit(
        self, request: DestinationRequest, now: float
    ) -> tuple[Parcel, tuple[JournalEntry, ...]]:
        """Open a parcel for a first scan, or bring a recirculating one round for another lap
        (:meth:`request` has closed any other parcel open under the tracking id)."""
        tracking_id = request.tracking_id
        parcel = self.on_belt.get(tracking_id)
        if parcel is None:
            arrived = request.scan_time - self._to_scan
            parcel = Parcel(self._line_id, tracking_id, request.barcode, arrived)
            parcel.stamps[_SCANNED] = now
            self.on_belt[tracking_id] = parcel
            self._watch(parcel, now)
            self.kpis.arrived(self._line_id, tracking_id, arrived)
            data = {"seq": request.seq, "scan_time": request.scan_time, "arrived_at": arrived}
            return parcel, (self._entry(_TRANSITION, parcel, now, None, _SCANNED, data=data),)
        previous = parcel.move(_SCANNED, now)
        self._watch(parcel, now)
        parcel.laps += 1
        parcel.stamps[_SCANNED] = now
        lap = {"seq": request.seq, "scan_time": request.scan_time, "lap": parcel.laps}
        if request.barcode and not request.fault and not parcel.hawb:  # read at last: its HAWB
            parcel.hawb = request.barcode
            lap["read_on_lap"] = parcel.laps
        return parcel, (self._entry(_TRANSITION, parcel, now, previous, _SCANNED, data=lap),)

    # --- evidence, review and decision ---------------------------------------------------

    def evidence(
        self, tracking_id: int, risk: RiskResult | None, xray: XrayResult | None, now: float
    ) -> list[Effect]:
        """The evidence gathered by the cutoff; ``xray`` None means none came in time."""
        pending = self.pending.get(tracking_id)
        if pending is None or pending.phase is not _GATHERING:
            return []
        parcel = pending.parcel
        inputs = _policy_inputs(
            (
                False,  # no_read
                risk,
                xray or XrayResult.fault(_LATE, "no result by the deadline"),
                parcel.hawb in self.holds,  # held
                self.rng.random(),  # audit_draw
                None,  # review
            )
        )
        decision = self.policy.decide(inputs)
        if (
            decision.destination is _INSPECTION
            and self.ask_reviews
            and now < pending.cutoff
            and self.policy.wants_review(inputs)
        ):
            pending.phase = _REVIEWING
            pending.inputs = inputs
            ask = ReviewRequest(
                self._line_id, tracking_id, parcel.hawb, risk, inputs.xray, pending.cutoff
            )
            return [AskReview(ask)]
        return self._decide(pending, decision, inputs, now)

    def reviewed(self, tracking_id: int, outcome: ReviewOutcome | None, now: float) -> list[Effect]:
        """An officer's verdict, or None when the cutoff came first."""
        pending = self.pending.get(tracking_id)
        if pending is None or pending.phase is not _REVIEWING or pending.inputs is None:
            return []
        held = pending.parcel.hawb in self.holds  # a hold placed meanwhile counts
        # The same inputs with the hold re-read and the review added (._replace is slow).
        no_read, risk, xray, _, audit_draw, _ = pending.inputs
        inputs = _policy_inputs((no_read, risk, xray, held, audit_draw, outcome))
        return self._decide(pending, self.policy.decide(inputs), inputs, now)

    def _decide(
        self,
        pending: _Pending,
        decision: Decision,
        inputs: PolicyInputs | dict[str, object],
        now: float,
        entries: tuple[JournalEntry, ...] = (),
    ) -> list[Effect]:
        parcel = pending.parcel
        lane = self._lane_for(decision.destination, now)
        if lane is not None and self._lane_kind[lane] is not decision.destination:
            decision = decision._replace(
                destination=_TO_EXCEPTION,
                reasons=(Reason.LANE_UNAVAILABLE, *decision.reasons),
            )
        applied = lane is not None and now <= pending.deadline
        entry = _journal_entry(
            (
                now,  # ts
                _DECISION,  # kind
                self._line_id,  # line
                parcel.tracking_id,
                parcel.hawb,
                _SCANNED if applied else "",  # state_from
                _DECIDED if applied else "",  # state_to
                decision.destination,
                lane,
                decision.reasons,
                decision.policy_version,
                DecisionData(inputs, pending.deadline, parcel.laps),  # data
            )
        )
        pending.phase = _JOURNALLING
        pending.decision = decision
        pending.lane = lane
        return [_record(((*entries, entry), parcel.tracking_id))]  # awaiting the tracking id

    def journalled(self, tracking_id: int, now: float, error: str = "") -> list[Effect]:
        """The decision's entry is durable (``error`` empty) or could not be written."""
        if self._orphans and self._orphaned(tracking_id):
            return []  # the write of a parcel settled meanwhile, not the one now pending
        pending = self.pending.get(tracking_id)
        if pending is None or pending.phase is not _JOURNALLING:
            return []
        del self.pending[tracking_id]
        parcel, decision, lane = pending.parcel, pending.decision, pending.lane
        if error:
            return self._miss(parcel, pending.deadline, now, f"journal write failed: {error}")
        if lane is None or decision is None:
            why = "no lane of the decided kind or exception available"
            return self._miss(parcel, pending.deadline, now, why)
        if now > pending.deadline or parcel.state is not _SCANNED:
            return self._miss(parcel, pending.deadline, now, "decided after the deadline")
        if decision.destination is _RELEASE and parcel.hawb in self.holds:
            why = "held while the release was being journalled"
            return self._miss(parcel, pending.deadline, now, why)
        parcel.move(_DECIDED, now)
        self._watch(parcel, now)
        self.load.assigned(lane, now)
        reasons = decision.reasons
        self.kpis.decided(self._line_id, lane, reasons)
        reply = _destination_reply(
            (self._line_id, tracking_id, lane, reasons[0], pending.request_seq)
        )
        return [_reply((reply, reasons))]

    def _lane_for(self, destination: LaneKind, now: float) -> int | None:
        """The available lane of the decided kind with the most spare capacity (recent
        assignments against ``capacity_per_h``); exception lanes if none; else None."""
        status = self.lane_status()
        for kind in (destination, _TO_EXCEPTION):
            lanes = self._lanes_of[kind]  # (id, lane) pairs: each id read once, not per parcel
            if len(lanes) == 1:  # the usual case, without building a list
                lane_id = lanes[0][0]
                if status.get(lane_id, _AVAILABLE) is _AVAILABLE:
                    return lane_id
                continue
            open_lanes = [
                lane for lane_id, lane in lanes if status.get(lane_id, _AVAILABLE) is _AVAILABLE
            ]
            if len(open_lanes) == 1:
                return open_lanes[0].id
            if open_lanes:
                return min(open_lanes, key=lambda lane: self.load.utilisation(lane, now)).id
        return None

    def _miss(self, parcel: Parcel, deadline: float, now: float, why: str) -> list[Effect]:
        """Record a missed deadline; the parcel awaits the PLC's default-lane confirmation."""
        if parcel.state is not _SCANNED:
            return []
        parcel.move(_DEFAULTED, now)
        self._watch(parcel, now)
        self.kpis.deadline_misses += 1
        entry = JournalEntry(
            ts=now,
            kind=_DEADLINE_MISS,
            line=self._line_id,
            tracking_id=parcel.tracking_id,
            hawb=parcel.hawb,
            state_from=_SCANNED_VALUE,
            state_to=_DEFAULTED_VALUE,
            reasons=(Reason.DEADLINE_MISSED,),
            data={"deadline": deadline, "late_by_s": now - deadline, "why": why},
        )
        return [Record((entry,))]

    def _settle(self, tracking_id: int) -> list[Effect]:
        """Forget a parcel's pending decision; its driver work is abandoned. A decision
        being journalled still gets its :meth:`journalled` call: that one is owed to the
        settled parcel, never to a new one under the same tracking id."""
        pending = self.pending.pop(tracking_id, None)
        if pending is None:
            return []
        if pending.phase is _JOURNALLING:
            self._orphans[tracking_id] = self._orphans.get(tracking_id, 0) + 1
        return [Abandon(tracking_id)]

    def _orphaned(self, tracking_id: int) -> bool:
        """Whether this journalled() call is owed to a settled parcel (and consume it)."""
        owed = self._orphans.get(tracking_id, 0)
        if not owed:
            return False
        if owed == 1:
            del self._orphans[tracking_id]
        else:
            self._orphans[tracking_id] = owed - 1
        return True

    # --- divert confirmations ------------------------------------------------------------

    def confirm(self, confirmation: DivertConfirmation, now: float) -> list[Effect]:
        if confirmation.redelivered and self._applied(confirmation):
            return []
        self._confirmed_at = now
        tracking_id = confirmation.tracking_id
        parcel = self.on_belt.get(tracking_id)
        if parcel is None:
            return self._unplaced(confirmation, now)
        effects: list[Effect] = self._clear(_UNKNOWN_PARCEL, "confirmations name tracked parcels")
        if parcel.state is _SCANNED:  # the PLC acted before our reply
            pending = self.pending.get(tracking_id)
            deadline = pending.deadline if pending else now
            effects += self._settle(tracking_id)
            effects += self._miss(parcel, deadline, now, "confirmation arrived before the reply")
        target, reason, alarm = self._outcome(confirmation, now)
        effects += alarm
        previous = parcel.state
        try:
            parcel.move(target, now)
        except IllegalTransitionError as exc:
            return [*effects, Record((self._illegal(parcel, exc, now),))]
        entry = self._entry(
            _CONFIRMATION,
            parcel,
            now,
            previous,
            target,
            lane=confirmation.lane,
            reasons=(reason,) if reason else (),
            data={"seq": confirmation.seq, "status": _STATUS_NAMES[confirmation.status]},
        )
        effects.append(_record(((entry,), None)))
        if target is _RECIRCULATING:
            self._watch(parcel, now)
            self.kpis.recirculations += 1
            return effects
        del self.on_belt[tracking_id]
        self._silent.pop(tracking_id, None)
        if target is _IN_INSPECTION:
            self.in_inspection.setdefault(parcel.hawb, deque()).append(parcel)
        else:
            self._closed(parcel, now)
        return effects

    def _outcome(
        self, confirmation: DivertConfirmation, now: float
    ) -> tuple[ParcelState, Reason | None, Sequence[Effect]]:
        status = confirmation.status
        if status in _RECIRCULATED:
            return _RECIRCULATING, _RECIRCULATED[status], _NO_ALARM
        if status is _LOST_TRACKING:
            return _EXCEPTION, Reason.LOST_TRACKING, _NO_ALARM
        kind = self._lane_kind.get(confirmation.lane)
        if kind is None:
            why = "the PLC diverted a parcel to a lane not in the line's configuration"
            alarm = self._raise(_UNKNOWN_LANE, f"{why}: {_describe(confirmation)}")
            return _EXCEPTION, Reason.LANE_UNAVAILABLE, alarm
        reason = Reason.PLC_DEFAULTED if status is _DEFAULTED_BY_PLC else None
        if _UNKNOWN_LANE in self._raised:
            return AFTER_DIVERT[kind], reason, self._clear(_UNKNOWN_LANE, "diverts to known lanes")
        return AFTER_DIVERT[kind], reason, _NO_ALARM

    # --- tracking watch ------------------------------------------------------------------

    def tick(self, now: float, running: bool = True) -> list[Effect]:
        """Time passes. Close every parcel on the belt that has gone ``confirm_timeout_s``
        of running line without news, and clear the ``lost-tracking`` alarm once the PLC has
        confirmed a parcel since the last loss and a whole timeout has passed with none lost.

        Call it every second or so, with ``running`` False while the line cannot move or
        report parcels (link down, line not running): the time since the previous tick then
        does not count, so a stop or an outage does not close the parcels on the belt.
        """
        if self._ticked_at is not None and not running:
            self._stood_s += now - self._ticked_at
        self._ticked_at = now
        belt_now = now - self._stood_s
        expired: list[tuple[int, Parcel]] = []
        for tracking_id, (lost_at, parcel) in self._silent.items():
            if lost_at > belt_now:
                break
            expired.append((tracking_id, parcel))
        effects: list[Effect] = []
        why = f"no telegram from the PLC for it in {self._timeout:g} s of running line"
        for tracking_id, parcel in expired:
            del self._silent[tracking_id]
            if self.on_belt.get(tracking_id) is parcel:
                effects += self._lose(parcel, now, Reason.CONFIRMATION_TIMEOUT, why)
        last = self._lost_at
        if last is not None and self._confirmed_at > last and now - last >= self._timeout:
            message = f"the PLC confirms parcels again; {self._lost} closed as lost tracking"
            self._lost_at, self._lost = None, 0
            effects.append(Alarm(_LOST_TRACKING_ALARM, message, False))
        return effects

    # --- operator commands ---------------------------------------------------------------

    def plan(
        self, command: RecordInspection | RecordVerdict | ForceClose, now: float
    ) -> Planned | Refused:
        """Check a command against the lifecycle without changing anything. An accepted one
        comes back with its journal entry and the step that applies it once durable."""
        if isinstance(command, RecordInspection):
            return self._plan_inspection(command, now)
        if isinstance(command, RecordVerdict):
            return self._plan_verdict(command, now)
        return self._plan_close(command, now)

    def _plan_inspection(self, command: RecordInspection, now: float) -> Planned | Refused:
        if not self.in_inspection.get(command.hawb):
            return Refused(f"no parcel of HAWB {command.hawb!r} waits at inspection")
        parcel = self.in_inspection[command.hawb][0]

        def commit(at: float) -> list[Effect] | Refused:
            waiting = self.in_inspection.get(command.hawb)
            if not waiting or waiting[0] is not parcel:
                return Refused(f"the parcel of HAWB {command.hawb!r} left inspection meanwhile")
            waiting.popleft()
            if not waiting:
                del self.in_inspection[command.hawb]
            target = AFTER_INSPECTION[command.outcome]
            parcel.move(target, at)
            self._closed(parcel, at)
            data = command_data(command)
            entry = self._entry(
                EntryKind.INSPECTION_RESULT, parcel, at, _IN_INSPECTION, target, data=data
            )
            return [Record((entry,))]

        return Planned(self._command_entry(command, parcel, now), commit)

    def _plan_verdict(self, command: RecordVerdict, now: float) -> Planned | Refused:
        pending = self.pending.get(command.tracking_id)
        if pending is None or pending.phase is not Phase.REVIEWING or now >= pending.cutoff:
            return Refused(
                f"parcel {command.tracking_id} on {self.line.id} is not awaiting a review "
                "(decided already, past its cutoff, or unknown)"
            )
        if command.hawb and command.hawb != pending.parcel.hawb:
            return Refused(
                f"parcel {command.tracking_id} on {self.line.id} is HAWB "
                f"{pending.parcel.hawb!r}, not {command.hawb!r}: the verdict was for another parcel"
            )

        def commit(at: float) -> list[Effect] | Refused:
            if self.pending.get(command.tracking_id) is not pending:
                return Refused(f"parcel {command.tracking_id} was closed meanwhile")
            if pending.phase is not Phase.REVIEWING or at >= pending.cutoff:
                return Refused(f"parcel {command.tracking_id} reached its cutoff meanwhile")
            decided = self.reviewed(command.tracking_id, command.outcome, at)
            return [Abandon(command.tracking_id), *decided]

        return Planned(self._command_entry(command, pending.parcel, now), commit)

    def _plan_close(self, command: ForceClose, now: float) -> Planned | Refused:
        parcel = self.on_belt.get(command.tracking_id)
        if parcel is None:
            return Refused(f"no open parcel {command.tracking_id} on the belt of {self.line.id}")
        if refusal := self._unclosable(parcel):
            return refusal

        def commit(at: float) -> list[Effect] | Refused:
            if self.on_belt.get(command.tracking_id) is not parcel:
                return Refused(f"parcel {command.tracking_id} was closed meanwhile")
            if refusal := self._unclosable(parcel):
                return refusal
            previous = parcel.move(_EXCEPTION, at)
            del self.on_belt[parcel.tracking_id]
            self._silent.pop(parcel.tracking_id, None)
            self._closed(parcel, at)
            entry = self._entry(
                _TRANSITION,
                parcel,
                at,
                previous,
                _EXCEPTION,
                reasons=(Reason.OPERATOR_CLOSED,),
                data=command_data(command),
            )
            return [Record((entry,))]

        return Planned(self._command_entry(command, parcel, now), commit)

    def _unclosable(self, parcel: Parcel) -> Refused | None:
        """An operator may close a parcel the sorter has acted on, never one being decided."""
        if parcel.state is not _SCANNED and _EXCEPTION in TRANSITIONS[parcel.state]:
            return None
        return Refused(
            f"parcel {parcel.tracking_id} is {parcel.state.value}; it can be closed only once "
            "the sorter has acted on it (defaulted, decided or recirculating)"
        )

    def _command_entry(
        self, command: RecordInspection | RecordVerdict | ForceClose, parcel: Parcel, now: float
    ) -> JournalEntry:
        """Who asked for what, and why: journalled before the command takes effect. The
        effect (a state change) is a row of its own, written once it is applied."""
        data = command_data(command, accepted=True)
        return self._entry(EntryKind.COMMAND, parcel, now, None, None, data=data)

    # --- recovery ------------------------------------------------------------------------

    def restore(self, parcels: list[Parcel], now: float) -> list[Effect]:
        """Take back parcels that were open when the controller last stopped."""
        effects: list[Effect] = []
        for parcel in parcels:
            if parcel.state is ParcelState.SCANNED:  # its decision died with the process
                effects += self._miss(parcel, now, now, "controller restarted while deciding")
            if parcel.state is ParcelState.IN_INSPECTION:
                self.in_inspection.setdefault(parcel.hawb, deque()).append(parcel)
            else:
                self.on_belt[parcel.tracking_id] = parcel
                self._watch(parcel, now)  # the PLC may have forgotten it meanwhile
            self.kpis.arrived(self.line.id, parcel.tracking_id, parcel.arrived_at)
        return effects

    def open_parcels(self) -> int:
        return len(self.on_belt) + sum(len(q) for q in self.in_inspection.values())

    def parcels(self) -> Iterator[Parcel]:
        """Every open parcel of the line: on the belt, then waiting at inspection."""
        yield from self.on_belt.values()
        for queue in self.in_inspection.values():
            yield from queue

    def awaiting_review(self) -> int:
        return sum(1 for p in self.pending.values() if p.phase is Phase.REVIEWING)

    def reviews(self) -> list[ReviewView]:
        """The parcels waiting for an officer's verdict, with the evidence they were sent for."""
        return [
            ReviewView(
                self._line_id,
                tid,
                p.parcel.hawb,
                p.parcel.arrived_at,
                p.cutoff,
                p.inputs.risk,
                p.inputs.xray,
            )
            for tid, p in self.pending.items()
            if p.phase is Phase.REVIEWING and p.inputs is not None
        ]

    # --- helpers -------------------------------------------------------------------------

    def _closed(self, parcel: Parcel, now: float) -> None:
        state = parcel.state
        self.kpis.closed(state)
        if state.cleared:
            self.kpis.cleared(self._line_id, parcel.tracking_id, parcel.arrived_at, now)

    def _lose(self, parcel: Parcel, now: float, reason: Reason, why: str) -> list[Effect]:
        """Close ``parcel`` as lost tracking, ``reason`` saying how it was found lost, and
        raise the line's alarm unless it is up."""
        tracking_id = parcel.tracking_id
        effects = self._settle(tracking_id)
        previous = parcel.move(_EXCEPTION, now)
        del self.on_belt[tracking_id]
        self._silent.pop(tracking_id, None)
        self._closed(parcel, now)
        reasons = (_LOST_TRACKING_REASON, reason)
        data = {"why": why, "confirm_timeout_s": self._timeout}
        entry = self._entry(
            _TRANSITION, parcel, now, previous, _EXCEPTION, reasons=reasons, data=data
        )
        effects.append(Record((entry,)))
        self._lost += 1
        if self._lost_at is None:
            message = (
                f"parcel {tracking_id} ({parcel.hawb or 'no-read'}) closed as lost tracking: "
                f"{why}; has the PLC restarted or lost parcels?"
            )
            effects.append(Alarm(_LOST_TRACKING_ALARM, message, True))
        self._lost_at = now
        return effects

    def _watch(self, parcel: Parcel, now: float) -> None:
        """News of ``parcel`` at ``now`` (a telegram, our reply): its silence starts again."""
        silent, tracking_id = self._silent, parcel.tracking_id
        silent.pop(tracking_id, None)  # and in again last: the dict stays in expiry order
        silent[tracking_id] = (now - self._stood_s + self._timeout, parcel)

    def _entry(
        self,
        kind: EntryKind,
        parcel: Parcel,
        now: float,
        state_from: ParcelState | None,
        state_to: ParcelState | None,
        *,
        lane: int | None = None,
        reasons: tuple[Reason, ...] = (),
        data: Mapping[str, object] | None = None,
    ) -> JournalEntry:
        return _journal_entry(
            (
                now,  # ts
                kind,
                self._line_id,  # line
                parcel.tracking_id,
                parcel.hawb,
                state_from or "",  # a StrEnum is its own value
                state_to or "",
                "",  # destination
                lane,
                reasons,
                "",  # policy_version
                NO_DATA if data is None else data,
            )
        )

    def _illegal(self, parcel: Parcel, exc: IllegalTransitionError, now: float) -> JournalEntry:
        self.kpis.illegal_transitions += 1
        return JournalEntry(
            ts=now,
            kind=EntryKind.ILLEGAL_TRANSITION,
            line=self.line.id,
            tracking_id=parcel.tracking_id,
            hawb=parcel.hawb,
            state_from=exc.current.value,
            state_to=exc.wanted.value,
            reasons=(Reason.ILLEGAL_TRANSITION,),
            data={"error": str(exc)},
        )

    def _applied(self, telegram: DestinationRequest | DivertConfirmation) -> bool:
        """Whether a telegram the PLC offers again after a controller restart was applied
        before it (the parcels were restored from the journal that has its entries): a
        request for the parcel's lap under way, or a confirmation for a parcel that is no
        longer on the belt or recirculates. It is a duplicate: nothing happens."""
        parcel = self.on_belt.get(telegram.tracking_id)
        if isinstance(telegram, DivertConfirmation):
            return parcel is None or parcel.state is _RECIRCULATING
        barcode = telegram.barcode
        return (
            parcel is not None
            and parcel.state is not _RECIRCULATING
            and not (barcode and parcel.hawb and barcode != parcel.hawb)
        )

    def _unplaced(self, confirmation: DivertConfirmation, now: float) -> list[Effect]:
        """A confirmation for a tracking id with no parcel on the belt: journalled as it came
        (no parcel moves), and the line's ``unknown-parcel`` alarm raised unless it is up."""
        entry = JournalEntry(
            ts=now,
            kind=_CONFIRMATION,
            line=self._line_id,
            tracking_id=confirmation.tracking_id,
            lane=confirmation.lane,
            data={
                "seq": confirmation.seq,
                "status": _STATUS_NAMES[confirmation.status],
                "why": "no parcel on the belt has this tracking id",
            },
        )
        why = f"the PLC confirmed a tracking id no parcel has: {_describe(confirmation)}"
        return [Record((entry,)), *self._raise(_UNKNOWN_PARCEL, why)]

    def _raise(self, what: str, message: str) -> list[Effect]:
        """Raise the line's alarm ``what`` once: nothing while it is up."""
        if what in self._raised:
            return []
        self._raised.add(what)
        return [Alarm(what, message, True)]

    def _clear(self, what: str, message: str) -> list[Effect]:
        if what not in self._raised:
            return []
        self._raised.discard(what)
        return [Alarm(what, message, False)]


def _describe(confirmation: DivertConfirmation) -> str:
    return (
        f"seq {confirmation.seq}, tracking id {confirmation.tracking_id}, "
        f"lane {confirmation.lane}, status {confirmation.status.name}"
    )


def _reused(parcel: Parcel, barcode: str) -> bool:
    """Whether a destination request under ``parcel``'s tracking id is for another parcel:
    only a recirculating parcel is requested again, with its own barcode or a no-read."""
    if parcel.state is not _RECIRCULATING:
        return True
    return bool(barcode and parcel.hawb and barcode != parcel.hawb)


def command_data(
    command: BaseModel, *, accepted: bool | None = None, refused: str = ""
) -> dict[str, object]:
    """A command as the journal keeps it: who, what, why, and (on the command's own row)
    whether it was accepted."""
    data: dict[str, object] = command.model_dump(mode="json")
    if accepted is not None:
        data["accepted"] = accepted
    if refused:
        data["refused"] = refused
    return data


class DecisionData(Mapping[str, object]):
    """A decision's inputs for the audit log, rendered to JSON-ready data when first read:
    the journal writer reads them, the twin's fast fidelity never does."""

    __slots__ = ("_deadline", "_inputs", "_lap", "_rendered")

    def __init__(self, inputs: PolicyInputs | dict[str, object], deadline: float, lap: int) -> None:
        self._inputs = inputs
        self._deadline = deadline
        self._lap = lap
        self._rendered: dict[str, object] | None = None

    def _data(self) -> dict[str, object]:
        if self._rendered is None:
            inputs = self._inputs
            described = describe(inputs) if isinstance(inputs, PolicyInputs) else inputs
            self._rendered = {**described, "deadline": self._deadline, "lap": self._lap}
        return self._rendered

    def __getitem__(self, key: str) -> object:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def describe(inputs: PolicyInputs) -> dict[str, object]:
    """The decision's inputs as JSON-ready data for the audit log (a StrEnum is a str)."""
    risk = inputs.risk
    return {
        "risk": None
        if risk is None
        else {"channel": risk.channel, "score": risk.score, "declared": risk.declared_goods},
        "xray": {
            "status": inputs.xray.status,
            "scores": dict(inputs.xray.scores),
            "model": inputs.xray.model_version,
            "detail": inputs.xray.detail,
        },
        "held": inputs.held,
        "audit_draw": round(inputs.audit_draw, 6),
        "review": inputs.review,
    }
