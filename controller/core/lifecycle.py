"""The parcel lifecycle as an explicit state machine.

Every state a parcel can be in is named here, and so is every allowed move between them. The
core never assigns a state directly: it calls :meth:`Parcel.move`, which refuses an illegal
transition with :class:`IllegalTransitionError` (the caller records it in the journal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from controller.core.domain import InspectionOutcome, LaneKind


class ParcelState(StrEnum):
    SCANNED = "scanned"  # destination requested, decision under way
    DECIDED = "decided"  # reply written to the sorter, divert pending
    DEFAULTED = "defaulted"  # deadline missed, the PLC's default lane stands
    RECIRCULATING = "recirculating"  # missed its divert or lane full; comes round again
    IN_INSPECTION = "in_inspection"  # diverted to an inspection lane, officer result pending
    # terminal states
    RELEASED = "released"
    CLEARED_AFTER_INSPECTION = "cleared_after_inspection"
    SEIZED = "seized"
    REFERRED = "referred"
    EXCEPTION = "exception"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def cleared(self) -> bool:
        """True where the clearance clock stops with the parcel free to go."""
        return self in CLEARED_STATES


TERMINAL_STATES = frozenset(
    {
        ParcelState.RELEASED,
        ParcelState.CLEARED_AFTER_INSPECTION,
        ParcelState.SEIZED,
        ParcelState.REFERRED,
        ParcelState.EXCEPTION,
    }
)

CLEARED_STATES = frozenset({ParcelState.RELEASED, ParcelState.CLEARED_AFTER_INSPECTION})

_AT_DIVERT = frozenset(
    {
        ParcelState.RELEASED,
        ParcelState.IN_INSPECTION,
        ParcelState.EXCEPTION,
        ParcelState.RECIRCULATING,
    }
)

TRANSITIONS: dict[ParcelState, frozenset[ParcelState]] = {
    ParcelState.SCANNED: frozenset(
        {ParcelState.DECIDED, ParcelState.DEFAULTED, ParcelState.EXCEPTION}
    ),
    ParcelState.DECIDED: _AT_DIVERT,
    ParcelState.DEFAULTED: _AT_DIVERT,
    ParcelState.RECIRCULATING: frozenset({ParcelState.SCANNED, ParcelState.EXCEPTION}),
    ParcelState.IN_INSPECTION: frozenset(
        {ParcelState.CLEARED_AFTER_INSPECTION, ParcelState.SEIZED, ParcelState.REFERRED}
    ),
    **{state: frozenset() for state in TERMINAL_STATES},
}


#: Where a parcel diverted into a lane of each kind goes.
AFTER_DIVERT = {
    LaneKind.RELEASE: ParcelState.RELEASED,
    LaneKind.INSPECTION: ParcelState.IN_INSPECTION,
    LaneKind.EXCEPTION: ParcelState.EXCEPTION,
}
#: Where a parcel goes on each inspection outcome an officer records.
AFTER_INSPECTION = {
    InspectionOutcome.CLEARED: ParcelState.CLEARED_AFTER_INSPECTION,
    InspectionOutcome.SEIZED: ParcelState.SEIZED,
    InspectionOutcome.REFERRED: ParcelState.REFERRED,
}


class IllegalTransitionError(Exception):
    """A move the lifecycle does not allow; the parcel keeps its current state."""

    def __init__(self, tracking_id: int, current: ParcelState, wanted: ParcelState) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none (terminal)"
        super().__init__(
            f"parcel {tracking_id}: illegal transition {current.value} -> {wanted.value} "
            f"(allowed from {current.value}: {allowed})"
        )
        self.tracking_id = tracking_id
        self.current = current
        self.wanted = wanted


@dataclass(slots=True)
class Parcel:
    """One parcel as the controller tracks it on one line.

    ``stamps`` holds the clock time at which the parcel first entered each state; ``arrived_at``
    is when it arrived on the line, where the clearance clock starts.
    """

    line: str
    tracking_id: int
    hawb: str
    arrived_at: float
    state: ParcelState = ParcelState.SCANNED
    laps: int = 0
    stamps: dict[ParcelState, float] = field(default_factory=dict)

    def move(self, to: ParcelState, now: float) -> ParcelState:
        """Move to ``to`` or raise :class:`IllegalTransitionError`; returns the previous state."""
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(self.tracking_id, self.state, to)
        previous, self.state = self.state, to
        self.stamps.setdefault(to, now)
        return previous

    def clearance_time(self) -> float | None:
        """Seconds from arrival to clearance, or None while not cleared."""
        if not self.state.cleared:
            return None
        return self.stamps[self.state] - self.arrived_at
