"""The policy-in-the-loop fast path: the real decision policy, lifecycle and KPIs, without
the asyncio core.

The full core through its ports (:mod:`simulation.offline`) costs an asyncio task, several
futures and a journal write per parcel, which is too slow for a 480,000-parcel day. This link
keeps the parts that decide and account — :class:`controller.policy.DecisionPolicy`,
:class:`controller.lifecycle.Parcel` and :class:`controller.kpi.Kpis` — and reproduces the
core's orchestration in SimPy time: evidence gathered until the cutoff (deadline minus the
reply budget), an officer's review while time remains, lane choice by lane status, the lap
limit and the PLC's default on a miss. Tests compare both fidelities on the same scenario.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import cast

import simpy

from controller.config import Line, SiteConfig
from controller.core import LaneLoad
from controller.domain import (
    Decision,
    DivertStatus,
    InspectionOutcome,
    LaneKind,
    LaneStatus,
    ReviewOutcome,
    XrayResult,
    XrayStatus,
)
from controller.kpi import Kpis
from controller.lifecycle import AFTER_DIVERT, AFTER_INSPECTION, Parcel, ParcelState
from controller.policy import DecisionPolicy, PolicyInputs
from controller.reasons import Reason
from simulation.plant import Item, Plant
from simulation.scenario import Scenario

_RECIRCULATED = {DivertStatus.MISSED, DivertStatus.LANE_FULL}
_AVAILABLE = LaneStatus.AVAILABLE
_RELEASE, _EXCEPTION = LaneKind.RELEASE, LaneKind.EXCEPTION
_SCANNED, _DECIDED, _DEFAULTED = ParcelState.SCANNED, ParcelState.DECIDED, ParcelState.DEFAULTED
_IN_INSPECTION = ParcelState.IN_INSPECTION
_OK = XrayStatus.OK


class PolicyLink:
    """Implements :class:`simulation.plant.ControlLink` with the real policy in the loop."""

    def __init__(self, site: SiteConfig, scenario: Scenario) -> None:
        self.site = site
        self.policy = DecisionPolicy(site.policy)
        self.kpis = Kpis(site.clearance.target_s, tuple(site.clearance.windows_s))
        self.lines = {line.id: line for line in site.lines}
        self.lane_kind = {
            (line.id, lane.id): lane.kind for line in site.lines for lane in line.lanes
        }
        self.lanes_of = {
            (line.id, kind): line.lanes_of(kind) for line in site.lines for kind in LaneKind
        }
        self.load = {line.id: LaneLoad() for line in site.lines}
        self.rng = {line.id: random.Random(f"{site.policy.seed}/{line.id}") for line in site.lines}
        self.version = self.policy.version
        self.timing = {
            line.id: (
                line.belt.induct_to_scan_s,
                line.belt.decision_window_s - line.reply_budget_s,
                line.lap_limit,
            )
            for line in site.lines
        }
        self.parcels: dict[tuple[str, int], Parcel] = {}
        self._names: dict[tuple[Reason, ...], str] = {}
        self.status: dict[tuple[str, int], LaneStatus] = {}
        self.model_version = scenario.detector.model_version
        self._plant: Plant | None = None
        self.env = simpy.Environment()  # replaced by the plant's in attach()

    def attach(self, plant: Plant) -> None:
        self._plant = plant
        self.env = plant.env

    @property
    def plant(self) -> Plant:
        assert self._plant is not None, "attach() first"
        return self._plant

    # --- destination requests --------------------------------------------------------------

    def request(self, item: Item, now: float) -> None:
        line_id = item.spec.line
        to_scan, window, lap_limit = self.timing[line_id]
        key = (line_id, item.tracking_id)
        parcel = self.parcels.get(key)
        barcode = item.barcode
        if parcel is None:
            arrived = now - to_scan
            parcel = Parcel(line_id, item.tracking_id, barcode, arrived)
            parcel.stamps[_SCANNED] = now
            self.parcels[key] = parcel
            self.kpis.arrived(line_id, item.tracking_id, arrived)
        else:
            parcel.move(_SCANNED, now)
            parcel.laps += 1
            parcel.stamps[_SCANNED] = now
        if not barcode:
            self._apply(item, parcel, Decision(LaneKind.EXCEPTION, (Reason.NO_READ,), self.version))
            return
        if parcel.laps >= lap_limit:
            self._apply(
                item, parcel, Decision(LaneKind.EXCEPTION, (Reason.LAP_LIMIT,), self.version)
            )
            return
        cutoff = now + window
        evidence_at = now + item.xray_latency_s
        if evidence_at > cutoff:
            xray = XrayResult.fault(XrayStatus.LATE, "no result by deadline")
            evidence_at = cutoff
        else:
            xray = XrayResult(_OK, item.spec.scores, self.model_version)
        env = self.env
        event = env.timeout(evidence_at - now, (item, parcel, xray, cutoff))
        event.callbacks.append(self._evidence)

    def _evidence(self, event: simpy.Event) -> None:
        """The evidence is in (or the cutoff came): decide, or ask an officer first."""
        item, parcel, xray, cutoff = cast(tuple[Item, Parcel, XrayResult, float], event.value)
        inputs = PolicyInputs(
            no_read=False,
            risk=item.spec.risk if parcel.hawb == item.spec.hawb else None,
            xray=xray,
            held=False,
            audit_draw=self.rng[item.spec.line].random(),
        )
        decision = self.policy.decide(inputs)
        if (
            decision.destination is not _RELEASE
            and self.env.now < cutoff
            and self.policy.wants_review(inputs)
        ):
            self._ask_officer(item, parcel, inputs, cutoff)
            return
        self._apply(item, parcel, decision)

    def _ask_officer(self, item: Item, parcel: Parcel, inputs: PolicyInputs, cutoff: float) -> None:
        review = self.plant.review
        state: dict[str, bool] = {}

        def answered(outcome: ReviewOutcome) -> None:
            if not state:
                state["closed"] = True
                self._apply(item, parcel, self.policy.decide(replace(inputs, review=outcome)))

        ticket = review.submit(item, cutoff, answered)

        def give_up(_: simpy.Event) -> None:
            if not state:
                state["closed"] = True
                review.withdraw(ticket)
                self._apply(item, parcel, self.policy.decide(inputs))

        env = self.env
        env.timeout(cutoff - env.now).callbacks.append(give_up)

    def _apply(self, item: Item, parcel: Parcel, decision: Decision) -> None:
        line = self.lines[item.spec.line]
        lane = self._lane_for(line, decision.destination)
        if lane is not None and self.lane_kind[(line.id, lane)] is not decision.destination:
            decision = replace(
                decision,
                destination=LaneKind.EXCEPTION,
                reasons=(Reason.LANE_UNAVAILABLE, *decision.reasons),
            )
        names = self._names.get(decision.reasons)
        if names is None:
            names = self._names[decision.reasons] = "|".join(r.name for r in decision.reasons)
        item.reasons = names
        now = self.env.now
        if lane is None:
            parcel.move(ParcelState.DEFAULTED, now)
            self.kpis.deadline_misses += 1
            return
        parcel.move(_DECIDED, now)
        self.plant.reply(line.id, item.tracking_id, lane)
        self.load[line.id].assigned(lane, now=now)
        self.kpis.decided(line.id, lane, decision.reasons)

    def _lane_for(self, line: Line, destination: LaneKind) -> int | None:
        """As the core chooses: the available lane of the decided kind with the most spare
        capacity by :class:`controller.core.LaneLoad`, else an exception lane, else None."""
        status = self.status
        load = self.load[line.id]
        now = self.env.now
        for kind in (destination, _EXCEPTION):
            lanes = self.lanes_of[(line.id, kind)]
            if len(lanes) == 1:
                if status.get((line.id, lanes[0].id), _AVAILABLE) is _AVAILABLE:
                    return lanes[0].id
                continue
            open_lanes = [
                lane for lane in lanes if status.get((line.id, lane.id), _AVAILABLE) is _AVAILABLE
            ]
            if len(open_lanes) == 1:
                return open_lanes[0].id
            if open_lanes:
                return min(open_lanes, key=lambda lane: load.utilisation(lane, now)).id
        return None

    # --- confirmations and inspection results ---------------------------------------------------

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None:
        key = (item.spec.line, item.tracking_id)
        parcel = self.parcels[key]
        if parcel.state is ParcelState.SCANNED:
            parcel.move(ParcelState.DEFAULTED, now)
            self.kpis.deadline_misses += 1
        if status in _RECIRCULATED:
            parcel.move(ParcelState.RECIRCULATING, now)
            self.kpis.recirculations += 1
            return
        if status is DivertStatus.LOST_TRACKING:
            target = ParcelState.EXCEPTION
        else:
            target = AFTER_DIVERT[self.lane_kind[(item.spec.line, lane)]]
        parcel.move(target, now)
        if target is not _IN_INSPECTION:
            self._closed(key, parcel, now)

    def inspected(self, item: Item, outcome: InspectionOutcome, now: float) -> None:
        key = (item.spec.line, item.tracking_id)
        parcel = self.parcels[key]
        parcel.move(AFTER_INSPECTION[outcome], now)
        self._closed(key, parcel, now)

    def tick(self, now: float) -> None:
        """Age the KPIs' pending verdicts (keeps memory flat over a long day)."""
        self.kpis.tick(now)

    def lane_status(self, line: str, lane: int, status: LaneStatus) -> None:
        self.status[(line, lane)] = status

    def _closed(self, key: tuple[str, int], parcel: Parcel, now: float) -> None:
        del self.parcels[key]
        self.kpis.closed(parcel.state.value)
        if parcel.state.cleared:
            self.kpis.cleared(parcel.line, parcel.tracking_id, parcel.arrived_at, now)
