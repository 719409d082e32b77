"""The controller's asyncio core: one :class:`LineController` per sorter line, in one process.

For each destination request it gathers the risk result and the X-ray result concurrently
under the parcel's deadline, optionally waits for an officer's on-screen review while time
remains, decides, journals the decision durably, and only then replies to the sorter — all
before the parcel reaches its divert point. Past the deadline it records the miss and lets the
PLC's default lane stand. Divert confirmations close parcels or send them round again.

The core knows nothing of protocols or databases: everything outside is a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, replace

from controller.clock import Clock
from controller.config import Lane, Line, SiteConfig
from controller.domain import (
    Decision,
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    EntryKind,
    InspectionOutcome,
    JournalEntry,
    LaneKind,
    LaneStatus,
    ReviewOutcome,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.holds import Holds
from controller.kpi import Kpis
from controller.lifecycle import (
    AFTER_DIVERT,
    AFTER_INSPECTION,
    IllegalTransitionError,
    Parcel,
    ParcelState,
)
from controller.policy import DecisionPolicy, PolicyInputs
from controller.ports import Journal, ReviewQueue, ReviewRequest, RiskSource, SorterPort, XrayPort
from controller.reasons import Reason

log = logging.getLogger(__name__)

_RECIRCULATED = {
    DivertStatus.MISSED: Reason.DIVERT_MISSED,
    DivertStatus.LANE_FULL: Reason.LANE_FULL,
}


class LineController:
    """Decides and tracks every parcel on one sorter line."""

    def __init__(
        self,
        line: Line,
        sorter: SorterPort,
        risk: RiskSource,
        xray: XrayPort,
        journal: Journal,
        clock: Clock,
        policy: DecisionPolicy,
        kpis: Kpis,
        holds: Holds,
        review: ReviewQueue | None = None,
    ) -> None:
        self.line = line
        self.sorter = sorter
        self.risk = risk
        self.xray = xray
        self.journal = journal
        self.clock = clock
        self.policy = policy
        self.kpis = kpis
        self.holds = holds
        self.review = review
        self.rng = random.Random(f"{policy.settings.seed}/{line.id}")
        self.on_belt: dict[int, Parcel] = {}
        self.in_inspection: dict[str, deque[Parcel]] = {}
        self._lane_kind = {lane.id: lane.kind for lane in line.lanes}
        self._load = LaneLoad()
        self._deciding: dict[int, asyncio.Task[None]] = {}
        self._backlog: list[JournalEntry] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- telegram loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the sorter until its telegram stream ends or this task is cancelled."""
        try:
            async for telegram in self.sorter.telegrams():
                if isinstance(telegram, DestinationRequest):
                    self._start_decision(telegram)
                else:
                    self._confirm(telegram)
        finally:
            await self.drain()

    #: Wall seconds a shutdown waits for decisions and journal writes in flight.
    DRAIN_LIMIT_S = 10.0

    async def drain(self, limit_s: float | None = None) -> None:
        """Wait, at most ``limit_s`` wall seconds in all, for decisions in flight and then for
        journal writes still pending. What is still running then is cancelled and logged: the
        PLC's default lane stands, and recovery takes those parcels back at the next start."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (self.DRAIN_LIMIT_S if limit_s is None else limit_s)
        for pending in (list(self._deciding.values()), [self._flusher]):
            tasks = [task for task in pending if task is not None]
            if not tasks:
                continue
            _, stuck = await asyncio.wait(tasks, timeout=max(0.0, until - loop.time()))
            for task in stuck:
                task.cancel()
            if stuck:
                log.warning("line %s: %d task(s) cut short at shutdown", self.line.id, len(stuck))

    def _start_decision(self, request: DestinationRequest) -> None:
        task = asyncio.create_task(self._decide(request))
        self._deciding[request.tracking_id] = task
        task.add_done_callback(lambda _: self._forget(request.tracking_id, task))

    def _forget(self, tracking_id: int, task: asyncio.Task[None]) -> None:
        if self._deciding.get(tracking_id) is task:
            del self._deciding[tracking_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("line %s parcel %s: decision failed: %r", self.line.id, tracking_id, exc)

    def restore(self, parcels: list[Parcel]) -> None:
        """Take back parcels that were open when the controller last stopped (see recovery)."""
        now = self.clock.now()
        for parcel in parcels:
            if parcel.state is ParcelState.SCANNED:  # its decision died with the process
                self._miss(parcel, now, "controller restarted while deciding")
            if parcel.state is ParcelState.IN_INSPECTION:
                self.in_inspection.setdefault(parcel.hawb, deque()).append(parcel)
            else:
                self.on_belt[parcel.tracking_id] = parcel
            if not parcel.state.cleared:
                self.kpis.arrived(self.line.id, parcel.tracking_id, parcel.arrived_at)

    # --- decisions -------------------------------------------------------------------------

    async def _decide(self, request: DestinationRequest) -> None:
        window = self.line.belt.decision_window_s
        deadline = request.scan_time + window
        parcel, entries = self._admit(request)
        if parcel is None:
            await self._journal(entries)
            return
        decision, inputs = await self._evaluate(parcel, request, deadline)
        lane = self._lane_for(decision.destination)
        if lane is not None and self._lane_kind[lane] is not decision.destination:
            decision = replace(
                decision,
                destination=LaneKind.EXCEPTION,
                reasons=(Reason.LANE_UNAVAILABLE, *decision.reasons),
            )
        applied = lane is not None and self.clock.now() <= deadline
        entry = self._entry(
            EntryKind.DECISION,
            parcel,
            state_from=ParcelState.SCANNED if applied else None,
            state_to=ParcelState.DECIDED if applied else None,
            destination=decision.destination.value,
            lane=lane,
            reasons=decision.reasons,
            policy_version=decision.policy_version,
            data={**inputs, "deadline": deadline, "lap": parcel.laps},
        )
        try:
            await self._journal([*entries, entry])  # durable before the sorter sees it
        except Exception as exc:  # any journal fault means: do not apply
            log.error("line %s: journal write failed, PLC default stands: %r", self.line.id, exc)
            self._miss(parcel, deadline, f"journal write failed: {exc!r}")
            return
        if lane is None:
            self._miss(parcel, deadline, "no lane of the decided kind or exception available")
            return
        if self.clock.now() > deadline or parcel.state is not ParcelState.SCANNED:
            self._miss(parcel, deadline, "decided after the deadline")
            return
        parcel.move(ParcelState.DECIDED, self.clock.now())
        reason = decision.reasons[0]
        await self.sorter.reply(DestinationReply(self.line.id, parcel.tracking_id, lane, reason))
        self._load.assigned(lane, now=self.clock.now())
        self.kpis.decided(self.line.id, lane, decision.reasons)

    def _admit(self, request: DestinationRequest) -> tuple[Parcel | None, list[JournalEntry]]:
        """Open a parcel for a first scan, or bring a recirculating one round for another lap."""
        now = self.clock.now()
        parcel = self.on_belt.get(request.tracking_id)
        if parcel is None:
            arrived = request.scan_time - self.line.belt.induct_to_scan_s
            parcel = Parcel(self.line.id, request.tracking_id, request.barcode, arrived)
            parcel.stamps[ParcelState.SCANNED] = now
            self.on_belt[request.tracking_id] = parcel
            self.kpis.arrived(self.line.id, parcel.tracking_id, arrived)
            entry = self._entry(
                EntryKind.TRANSITION,
                parcel,
                state_to=ParcelState.SCANNED,
                data={"seq": request.seq, "scan_time": request.scan_time, "arrived_at": arrived},
            )
            return parcel, [entry]
        try:
            previous = parcel.move(ParcelState.SCANNED, now)
        except IllegalTransitionError as exc:
            # Came round again without a confirmation: tracking cannot be trusted.
            return None, [self._illegal(parcel, exc), *self._close_lost(parcel, now)]
        parcel.laps += 1
        parcel.stamps[ParcelState.SCANNED] = now
        entry = self._entry(
            EntryKind.TRANSITION,
            parcel,
            state_from=previous,
            state_to=ParcelState.SCANNED,
            data={"seq": request.seq, "scan_time": request.scan_time, "lap": parcel.laps},
        )
        return parcel, [entry]

    async def _evaluate(
        self, parcel: Parcel, request: DestinationRequest, deadline: float
    ) -> tuple[Decision, dict[str, object]]:
        """Gather the evidence under the deadline and apply the policy."""
        version = self.policy.version
        if request.fault:
            decision = Decision(LaneKind.EXCEPTION, (Reason.MALFORMED_TELEGRAM,), version)
            return decision, {"fault": request.fault}
        if not request.barcode:
            return Decision(LaneKind.EXCEPTION, (Reason.NO_READ,), version), {"no_read": True}
        if parcel.laps >= self.line.lap_limit:
            decision = Decision(LaneKind.EXCEPTION, (Reason.LAP_LIMIT,), version)
            return decision, {"laps": parcel.laps}
        cutoff = deadline - self.line.reply_budget_s
        xray_task = asyncio.create_task(self._xray(parcel))
        risk: RiskResult | None = None
        with contextlib.suppress(TimeoutError):
            async with self.clock.timeout_at(cutoff):
                risk = await self._risk(parcel.hawb)  # the X-ray runs meanwhile
                await asyncio.wait((xray_task,))
        if xray_task.done():
            xray = xray_task.result()
        else:
            xray_task.cancel()
            xray = XrayResult.fault(XrayStatus.LATE, "no result by the deadline")
        inputs = PolicyInputs(
            no_read=False,
            risk=risk,
            xray=xray,
            held=parcel.hawb in self.holds,
            audit_draw=self.rng.random(),
        )
        if self.review is not None and self.policy.wants_review(inputs):
            ask = ReviewRequest(self.line.id, parcel.tracking_id, parcel.hawb, risk, xray, cutoff)
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout_at(cutoff):
                    inputs = replace(inputs, review=await self.review.review(ask))
        return self.policy.decide(inputs), _describe(inputs)

    async def _risk(self, hawb: str) -> RiskResult | None:
        try:
            return await self.risk.lookup(hawb)
        except Exception as exc:  # a broken risk source means: no risk result
            log.warning("line %s: risk lookup for %s failed: %r", self.line.id, hawb, exc)
            return None

    async def _xray(self, parcel: Parcel) -> XrayResult:
        try:
            return await self.xray.analyse(self.line.id, parcel.tracking_id, parcel.hawb)
        except Exception as exc:  # the port should report faults itself; fail secure if not
            return XrayResult.fault(XrayStatus.FAILED, repr(exc))

    def _lane_for(self, destination: LaneKind) -> int | None:
        """The available lane of the decided kind with the most spare capacity (recent
        assignments against ``capacity_per_h``); exception lanes if none; else None."""
        status = self.sorter.lane_status()
        now = self.clock.now()
        for kind in (destination, LaneKind.EXCEPTION):
            open_lanes = [
                lane
                for lane in self.line.lanes_of(kind)
                if status.get(lane.id, LaneStatus.AVAILABLE) is LaneStatus.AVAILABLE
            ]
            if open_lanes:
                return min(open_lanes, key=lambda lane: self._load.utilisation(lane, now)).id
        return None

    def _miss(self, parcel: Parcel, deadline: float, why: str) -> None:
        """Record a missed deadline; the parcel awaits the PLC's default-lane confirmation."""
        if parcel.state is not ParcelState.SCANNED:
            return
        now = self.clock.now()
        parcel.move(ParcelState.DEFAULTED, now)
        self.kpis.deadline_misses += 1
        entry = self._entry(
            EntryKind.DEADLINE_MISS,
            parcel,
            state_from=ParcelState.SCANNED,
            state_to=ParcelState.DEFAULTED,
            reasons=(Reason.DEADLINE_MISSED,),
            data={"deadline": deadline, "late_by_s": now - deadline, "why": why},
        )
        self._journal_later([entry])

    # --- confirmations ---------------------------------------------------------------------

    def _confirm(self, confirmation: DivertConfirmation) -> None:
        now = self.clock.now()
        parcel = self.on_belt.get(confirmation.tracking_id)
        if parcel is None:
            self._alarm(
                confirmation.tracking_id, "confirmation for unknown tracking id", confirmation
            )
            return
        if parcel.state is ParcelState.SCANNED:  # the PLC acted before our reply
            task = self._deciding.get(parcel.tracking_id)
            if task is not None:
                task.cancel()
            self._miss(parcel, now, "confirmation arrived before the reply")
        target, reason = self._outcome(confirmation)
        previous = parcel.state
        try:
            parcel.move(target, now)
        except IllegalTransitionError as exc:
            self._journal_later([self._illegal(parcel, exc)])
            return
        entry = self._entry(
            EntryKind.CONFIRMATION,
            parcel,
            state_from=previous,
            state_to=target,
            lane=confirmation.lane,
            reasons=(reason,) if reason else (),
            data={"seq": confirmation.seq, "status": confirmation.status.name},
        )
        self._journal_later([entry])
        if target is ParcelState.RECIRCULATING:
            self.kpis.recirculations += 1
        elif target is ParcelState.IN_INSPECTION:
            del self.on_belt[parcel.tracking_id]
            self.in_inspection.setdefault(parcel.hawb, deque()).append(parcel)
        else:
            del self.on_belt[parcel.tracking_id]
            self._closed(parcel, now)

    def _outcome(self, confirmation: DivertConfirmation) -> tuple[ParcelState, Reason | None]:
        status = confirmation.status
        if status in _RECIRCULATED:
            return ParcelState.RECIRCULATING, _RECIRCULATED[status]
        if status is DivertStatus.LOST_TRACKING:
            return ParcelState.EXCEPTION, Reason.LOST_TRACKING
        kind = self._lane_kind.get(confirmation.lane)
        if kind is None:
            self._alarm(
                confirmation.tracking_id, "diverted to a lane not in the config", confirmation
            )
            return ParcelState.EXCEPTION, Reason.LANE_UNAVAILABLE
        reason = Reason.PLC_DEFAULTED if status is DivertStatus.DEFAULTED else None
        return AFTER_DIVERT[kind], reason

    def record_inspection(self, hawb: str, outcome: InspectionOutcome) -> bool:
        """Close the oldest parcel of ``hawb`` waiting at inspection; False if none waits."""
        queue = self.in_inspection.get(hawb)
        if not queue:
            return False
        parcel = queue.popleft()
        if not queue:
            del self.in_inspection[hawb]
        now = self.clock.now()
        target = AFTER_INSPECTION[outcome]
        parcel.move(target, now)
        self._journal_later(
            [
                self._entry(
                    EntryKind.INSPECTION_RESULT,
                    parcel,
                    state_from=ParcelState.IN_INSPECTION,
                    state_to=target,
                    data={"outcome": outcome.value},
                )
            ]
        )
        self._closed(parcel, now)
        return True

    def _closed(self, parcel: Parcel, now: float) -> None:
        self.kpis.closed(parcel.state.value)
        if parcel.state.cleared:
            self.kpis.cleared(self.line.id, parcel.tracking_id, parcel.arrived_at, now)

    def _close_lost(self, parcel: Parcel, now: float) -> list[JournalEntry]:
        previous = parcel.state
        parcel.move(ParcelState.EXCEPTION, now)
        del self.on_belt[parcel.tracking_id]
        self._closed(parcel, now)
        entry = self._entry(
            EntryKind.TRANSITION,
            parcel,
            state_from=previous,
            state_to=ParcelState.EXCEPTION,
            reasons=(Reason.LOST_TRACKING,),
        )
        return [entry]

    # --- journal -----------------------------------------------------------------------------

    def _entry(
        self,
        kind: EntryKind,
        parcel: Parcel,
        *,
        state_from: ParcelState | None = None,
        state_to: ParcelState | None = None,
        destination: str = "",
        lane: int | None = None,
        reasons: tuple[Reason, ...] = (),
        policy_version: str = "",
        data: Mapping[str, object] | None = None,
    ) -> JournalEntry:
        return JournalEntry(
            ts=self.clock.now(),
            kind=kind,
            line=self.line.id,
            tracking_id=parcel.tracking_id,
            hawb=parcel.hawb,
            state_from=state_from.value if state_from else "",
            state_to=state_to.value if state_to else "",
            destination=destination,
            lane=lane,
            reasons=reasons,
            policy_version=policy_version,
            data=data or {},
        )

    def _illegal(self, parcel: Parcel, exc: IllegalTransitionError) -> JournalEntry:
        self.kpis.illegal_transitions += 1
        log.warning("line %s: %s", self.line.id, exc)
        return self._entry(
            EntryKind.ILLEGAL_TRANSITION,
            parcel,
            state_from=exc.current,
            state_to=exc.wanted,
            reasons=(Reason.ILLEGAL_TRANSITION,),
            data={"error": str(exc)},
        )

    def _alarm(self, tracking_id: int, message: str, telegram: DivertConfirmation) -> None:
        log.warning("line %s parcel %s: %s", self.line.id, tracking_id, message)
        entry = JournalEntry(
            ts=self.clock.now(),
            kind=EntryKind.ALARM,
            line=self.line.id,
            tracking_id=tracking_id,
            data={
                "message": message,
                "telegram": {**asdict(telegram), "status": telegram.status.name},
            },
        )
        self._journal_later([entry])

    async def _journal(self, entries: list[JournalEntry]) -> None:
        if entries:
            await self.journal.write(entries)

    def _journal_later(self, entries: list[JournalEntry]) -> None:
        """Journal off the telegram loop's path, batched into one write per loop turn."""
        self._backlog.extend(entries)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._backlog:
            batch, self._backlog = self._backlog, []
            try:
                await self.journal.write(batch)
            except Exception as exc:  # the log keeps what the journal could not
                log.error(
                    "line %s: journal write of %d entries failed: %r; entries: %s",
                    self.line.id,
                    len(batch),
                    exc,
                    [(e.kind.value, e.tracking_id, e.state_from, e.state_to) for e in batch],
                )


class LaneLoad:
    """Parcels sent to each lane over the last ``window_s``, as a share of its capacity."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._sent: dict[int, deque[float]] = {}

    def assigned(self, lane: int, now: float) -> None:
        self._sent.setdefault(lane, deque()).append(now)

    def utilisation(self, lane: Lane, now: float) -> float:
        sent = self._sent.get(lane.id)
        if not sent:
            return 0.0
        while sent and sent[0] < now - self.window_s:
            sent.popleft()
        return len(sent) / (lane.capacity_per_h * self.window_s / 3600)


class Controller:
    """Every line of one site, run together in one task group, sharing KPIs and holds."""

    def __init__(
        self,
        site: SiteConfig,
        sorters: Mapping[str, SorterPort],
        risk: RiskSource,
        xray: XrayPort,
        journal: Journal,
        clock: Clock,
        review: ReviewQueue | None = None,
        holds: Holds | None = None,
    ) -> None:
        missing = [line.id for line in site.lines if line.id not in sorters]
        if missing:
            raise ValueError(f"no sorter adapter for line(s): {', '.join(missing)}")
        self.site = site
        self.clock = clock
        self.policy = DecisionPolicy(site.policy)
        self.holds = holds or Holds()
        self.kpis = Kpis(site.clearance.target_s, tuple(site.clearance.windows_s))
        self.lines = {
            line.id: LineController(
                line,
                sorters[line.id],
                risk,
                xray,
                journal,
                clock,
                self.policy,
                self.kpis,
                self.holds,
                review,
            )
            for line in site.lines
        }

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for line in self.lines.values():
                group.create_task(line.run())

    def record_inspection(self, hawb: str, outcome: InspectionOutcome) -> bool:
        """Record an officer's inspection result for a parcel on any line."""
        return any(line.record_inspection(hawb, outcome) for line in self.lines.values())

    def open_parcels(self) -> int:
        return sum(
            len(line.on_belt) + sum(len(q) for q in line.in_inspection.values())
            for line in self.lines.values()
        )


def _describe(inputs: PolicyInputs) -> dict[str, object]:
    """The decision's inputs as JSON-ready data for the audit log."""
    risk: RiskResult | None = inputs.risk
    return {
        "risk": None
        if risk is None
        else {"channel": risk.channel.value, "score": risk.score, "declared": risk.declared_goods},
        "xray": {
            "status": inputs.xray.status.value,
            "scores": dict(inputs.xray.scores),
            "model": inputs.xray.model_version,
            "detail": inputs.xray.detail,
        },
        "held": inputs.held,
        "audit_draw": round(inputs.audit_draw, 6),
        "review": inputs.review.value if isinstance(inputs.review, ReviewOutcome) else None,
    }
