"""Value types shared by the core, its ports and their adapters.

Everything here is immutable — a named tuple or an enum: values that cross a port boundary
are never mutated after they are made, so an adapter cannot change what the core decided on.
Named tuples rather than frozen dataclasses because most of these are made per parcel at line
rate (the twin makes half a million parcels' worth in a run), and a tuple is built about three
times faster.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import NamedTuple

from controller.core.reasons import Reason


class LaneKind(StrEnum):
    """Where a parcel can leave the sorter. Severity grows down the list."""

    RELEASE = "release"
    INSPECTION = "inspection"
    EXCEPTION = "exception"


class LaneStatus(IntEnum):
    """Lane status word reported by the PLC."""

    AVAILABLE = 0
    FULL = 1
    BLOCKED = 2


class RiskChannel(StrEnum):
    """Customs risk channel from advance electronic data."""

    GREEN = "GREEN"
    YELLOW = "YELLOW"
    RED = "RED"


class RiskResult(NamedTuple):
    """A parcel's pre-computed risk result, loaded ahead of arrival."""

    hawb: str
    channel: RiskChannel
    score: float
    declared_goods: str = ""
    flight: str = ""


class XrayStatus(StrEnum):
    """Whether the on-site X-ray inference produced usable scores."""

    OK = "ok"
    MISSING = "missing"  # no image arrived for the parcel
    FAILED = "failed"  # the model raised or the session is down
    LATE = "late"  # no result before the parcel's deadline
    BAD_IMAGE = "bad_image"  # an image arrived but could not be read


NO_SCORES: Mapping[str, float] = MappingProxyType({})


class XrayResult(NamedTuple):
    """Per-class scores in [0, 1] from the on-site model, or why there are none."""

    status: XrayStatus
    scores: Mapping[str, float] = NO_SCORES
    model_version: str = ""
    detail: str = ""

    @classmethod
    def fault(cls, status: XrayStatus, detail: str = "") -> XrayResult:
        return cls(status=status, detail=detail)


class ReviewOutcome(StrEnum):
    """An officer's on-screen review of a parcel's image and declaration."""

    CLEAR = "clear"
    INSPECT = "inspect"


class InspectionOutcome(StrEnum):
    """What an officer records after opening a parcel at an inspection station."""

    CLEARED = "cleared"
    SEIZED = "seized"
    REFERRED = "referred"  # sent for further checks


class Decision(NamedTuple):
    """The policy's answer: a destination, every reason for it, and the policy that gave it."""

    destination: LaneKind
    reasons: tuple[Reason, ...]
    policy_version: str


# --- sorter telegrams (the contract in docs/plc-interface.md) -----------------------------


class DivertStatus(IntEnum):
    """Disposition reported by the PLC in a divert confirmation (wire values)."""

    DIVERTED = 0
    LANE_FULL = 1  # aborted to recirculation because the lane was full
    MISSED = 2  # passed its divert point; recirculated
    DEFAULTED = 3  # no reply in time; the PLC applied its default lane
    LOST_TRACKING = 4


class DestinationRequest(NamedTuple):
    """PLC → controller: a parcel left the scan tunnel and needs a destination."""

    line: str
    seq: int
    tracking_id: int
    barcode: str  # empty string = no-read
    scan_time: float  # seconds on the controller's clock
    fault: str = ""  # set by an adapter for a malformed telegram: the parcel goes to exception
    redelivered: bool = False  # offered again after a controller restart: may be journalled


class DestinationReply(NamedTuple):
    """Controller → PLC: the lane a parcel must be diverted to."""

    line: str
    tracking_id: int
    lane: int
    reason: Reason
    request_seq: int | None = None
    """The ``seq`` of the destination request it answers (None: not known). A sorter that
    can see a newer request for the tracking id drops the reply: it answers an earlier lap
    or an earlier parcel, and must not steer the one the PLC tracks now."""


class DivertConfirmation(NamedTuple):
    """PLC → controller: what actually happened at the divert."""

    line: str
    seq: int
    tracking_id: int
    lane: int
    status: DivertStatus
    redelivered: bool = False  # offered again after a controller restart: may be journalled


Telegram = DestinationRequest | DivertConfirmation


# --- audit journal ---------------------------------------------------------------------------


class EntryKind(StrEnum):
    """What a journal entry records."""

    TRANSITION = "transition"
    DECISION = "decision"
    CONFIRMATION = "confirmation"
    DEADLINE_MISS = "deadline_miss"
    ILLEGAL_TRANSITION = "illegal_transition"
    INSPECTION_RESULT = "inspection_result"  # written by releases before operator commands
    COMMAND = "command"  # an operator's or officer's command, accepted or refused
    ALARM = "alarm"


NO_DATA: Mapping[str, object] = MappingProxyType({})


class JournalEntry(NamedTuple):
    """One durable audit record. ``data`` must be JSON-serialisable (the decision's inputs)."""

    ts: float
    kind: EntryKind
    line: str
    tracking_id: int
    hawb: str = ""
    state_from: str = ""
    state_to: str = ""
    destination: str = ""
    lane: int | None = None
    reasons: tuple[Reason, ...] = ()
    policy_version: str = ""
    data: Mapping[str, object] = NO_DATA
