"""The ports: what the core needs from the world, as ``typing.Protocol`` classes.

The core imports nothing else from outside ``controller``'s pure modules. Adapters (PLC
protocols, databases, HTTP, ONNX, the digital twin) implement these; a new sorter, scanner or
risk feed is a new adapter, never a change to the core.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controller.core.audit import AuditPage, AuditQuery
from controller.core.commands import Command, CommandResult
from controller.core.domain import (
    DestinationReply,
    JournalEntry,
    LaneStatus,
    ReviewOutcome,
    RiskResult,
    Telegram,
    XrayResult,
)
from controller.core.views import SorterHealth


class SorterPort(Protocol):
    """One sorter line's PLC, as the controller sees it."""

    line: str

    def telegrams(self) -> AsyncIterator[Telegram]:
        """Destination requests and divert confirmations, in PLC order, each exactly once per
        run. Those not acknowledged when the controller stops are offered again at its next
        start, marked ``redelivered`` (a previous run may already have journalled them)."""
        ...

    def acknowledge(self, telegram: Telegram) -> None:
        """The entries the controller recorded for ``telegram`` (as delivered) are durable:
        the adapter may now tell the PLC it was consumed. Adapters acknowledge to the PLC in
        delivery order, so a telegram waits for every one before it. Non-blocking."""
        ...

    async def reply(self, reply: DestinationReply) -> None:
        """Hand a reply to the PLC; returns when accepted by the adapter, not when moved."""
        ...

    def lane_status(self) -> Mapping[int, LaneStatus]:
        """The latest lane status words; lanes not listed count as available."""
        ...

    def health(self) -> SorterHealth:
        """The link, the PLC's PackML state and its heartbeat's age, for the floor's view;
        read from what the adapter already knows, never from the wire."""
        ...


class RiskSource(Protocol):
    async def lookup(self, hawb: str) -> RiskResult | None:
        """The parcel's pre-computed risk result, or None when unknown. Must not block."""
        ...


class XrayPort(Protocol):
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        """Score the parcel's X-ray image. Faults come back as a result, never as exceptions;
        the core cancels the call when the parcel's deadline passes."""
        ...


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    line: str
    tracking_id: int
    hawb: str
    risk: RiskResult | None
    xray: XrayResult
    deadline: float


@dataclass(frozen=True, slots=True)
class ScanImage:
    """An X-ray image handed over by a scanner, matched to a parcel by HAWB or tracking id.

    ``pixels`` is a numpy array (H×W, or C×H×W for dual energy; uint8, uint16 or float32);
    it is None when the image could not be read, and ``error`` says why.
    """

    hawb: str
    tracking_id: int | None
    source: str
    received_at: float
    pixels: Any = None
    error: str | None = None


class ImageSource(Protocol):
    async def image_for(self, line: str, tracking_id: int, hawb: str) -> ScanImage:
        """Wait for the parcel's image (cancelled when the deadline passes). Must not block."""
        ...


class ReviewQueue(Protocol):
    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        """An officer's on-screen verdict. Cancelled if the parcel's deadline comes first."""
        ...


class Journal(Protocol):
    async def write(self, entries: list[JournalEntry]) -> None:
        """Return once every entry is durable. Must not block the event loop."""
        ...


class AlarmSink(Protocol):
    def alarm(self, source: str, message: str, *, active: bool) -> None:
        """Record that an alarm began (``active``) or ended; idempotent per state, non-blocking."""
        ...


class OperatorCommands(Protocol):
    async def execute(self, command: Command) -> CommandResult:
        """Check ``command`` against the lifecycle, journal it durably with who and why
        (refused ones too), then apply it. Never raises for a command a user got wrong: the
        result says why it was refused."""
        ...


class AuditLog(Protocol):
    """The journal, searched: track and trace, the alarm history, the supervisors' audit."""

    async def search(self, query: AuditQuery) -> AuditPage:
        """Matching entries, newest first. Must not block the event loop."""
        ...
