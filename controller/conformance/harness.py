"""What the integrator's fixtures return: one *kit* per port, which opens a *harness*.

The fixture ``cargogate_<port>`` returns a kit: a cheap, synchronous object with

* ``checklist``: the path of the adapter's checklist file, or None (every rule done);
* ``open(ctx)``: an async context manager that builds the adapter (through its factory, as
  the site would) and whatever plays the world around it (an emulated PLC, a scanner, a
  manifest source), yields the harness, and closes both on exit.

The kit calls ``open`` once per rule, on the rule's own event loop. A harness gives the
adapter under test and the controls the rules drive. Optional controls are separate
protocols: a rule that needs one the harness lacks fails saying so, unless the checklist
marks that rule exempt (with the reason it does not apply).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from controller.core.domain import DestinationReply, DivertStatus, LaneStatus
from controller.core.ports import AlarmSink, SorterPort, XrayPort

if TYPE_CHECKING:
    from controller.intake.factory import SourceContext
    from controller.intake.matcher import ImageMatcher
    from controller.risk.feeds import RiskFeed


class Kit(Protocol):
    @property
    def checklist(self) -> Path | None:
        """The adapter's checklist file (``<port>-<type>.conformance.toml``), or None."""
        ...


# --- sorter ----------------------------------------------------------------------------------

RELEASE_LANE = 1
INSPECTION_LANE = 2
EXCEPTION_LANE = 9
"""The kit's sorter line has lanes 1 (release), 2 (inspection) and 9 (exception); lane 9 is
the PLC's default lane, where a parcel goes without a reply in time (or in its safe state)."""


@dataclass(frozen=True)
class SorterContext:
    alarms: AlarmSink
    """Give it to the adapter: the rules read the alarms it raises (``<line>/...``)."""
    mailbox_slots: int = 64
    """Telegram slots in the PLC's mailbox (ring); the mailbox rule asks for 8."""


class SorterPlant(Protocol):
    """The PLC side of the line (an emulated or simulated PLC speaking your protocol)."""

    def now(self) -> float:
        """Now, on the clock the adapter stamps scan times with (the controller's clock)."""
        ...

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        """A parcel left the scanner at ``scan_time``: send its destination request; returns
        the telegram's sequence number."""
        ...

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        """Send a divert confirmation; returns its sequence number."""
        ...

    def set_lane_status(self, lane: int, status: LaneStatus) -> None: ...

    def resend(self, seq: int) -> None:
        """Send telegram ``seq`` again, identical (as a PLC may after a comms fault)."""
        ...

    def send_raw_request(self, seq: int | None, tracking_id: int, barcode: bytes) -> int:
        """Send a request exactly as given: the barcode's bytes as they are, and sequence
        number ``seq`` (None: the next one); returns the sequence number used."""
        ...

    def send_raw_confirmation(
        self, seq: int | None, tracking_id: int, lane: int, status: int
    ) -> int:
        """Send a confirmation exactly as given (lane 0, an unknown status); returns its
        sequence number."""
        ...

    @property
    def replies(self) -> Sequence[DestinationReply]:
        """Every reply the PLC has read, in order, whether it credited it or not."""
        ...


class SorterHarness(Protocol):
    @property
    def sorter(self) -> SorterPort:
        """The adapter under test, built with ``ctx.alarms``; the kit reads its telegrams and
        acknowledges each at once."""
        ...

    @property
    def plant(self) -> SorterPlant: ...


@runtime_checkable
class Settles(Protocol):
    def settled(self) -> bool:
        """The link is up, both heartbeats run and the PLC shows no fault flag (start-up
        alarms are over)."""
        ...


@runtime_checkable
class RestartControls(Settles, Protocol):
    """For sorter:restart."""

    @property
    def connects(self) -> int:
        """How many times the adapter has established its link."""
        ...

    async def restart_plc_server(self) -> None:
        """Stop the PLC's server for a moment (0.3 s) and start it again; the PLC keeps its
        memory and its telegram backlog."""
        ...


@runtime_checkable
class HeartbeatControls(Settles, Protocol):
    """For sorter:controller-heartbeat and sorter:plc-heartbeat."""

    @property
    def heartbeat_timeout_s(self) -> float:
        """How long the adapter waits for the PLC's heartbeat to move before it alarms."""
        ...

    def suspend_controller_heartbeat(self, suspended: bool) -> None:
        """Stop (or resume) the adapter's heartbeat to the PLC; everything else runs on."""
        ...

    def freeze_plc_heartbeat(self, frozen: bool) -> None:
        """Stop (or resume) the PLC's heartbeat, as a stopped PLC program would."""
        ...

    def plc_safe_state(self) -> bool:
        """The PLC is in its safe state (it lost the controller's heartbeat)."""
        ...

    def divert(self, tracking_id: int) -> tuple[int, DivertStatus]:
        """Where the PLC sends the parcel at its divert, decided now: lane and status."""
        ...


@runtime_checkable
class MailboxControls(Settles, Protocol):
    """For sorter:mailbox-full."""

    async def stop_plc_server(self) -> None:
        """Stop serving (the adapter cannot take telegrams); the PLC runs on."""
        ...

    async def start_plc_server(self) -> None: ...

    def mailbox_full(self) -> bool:
        """The PLC reports its mailbox full."""
        ...

    def backlog(self) -> int:
        """Telegrams waiting in the PLC for room in the mailbox."""
        ...


@runtime_checkable
class TelegramCounts(Protocol):
    """Optional: when the adapter counts what it dropped, the rules check the counts too."""

    def telegram_counts(self) -> Mapping[str, int]:
        """At least ``duplicates`` (telegrams dropped as repeats) and ``faults`` (telegrams
        with a malformed value)."""
        ...


class SorterKit(Kit, Protocol):
    def open(self, ctx: SorterContext) -> AbstractAsyncContextManager[SorterHarness]: ...


# --- X-ray -----------------------------------------------------------------------------------


class XrayCase(StrEnum):
    """What analysing a parcel is to meet."""

    SCORABLE = "scorable"
    """A readable image the adapter scores; parcels of other ``index`` get other scores."""
    UNREADABLE = "unreadable"
    """An image arrives but cannot be read."""
    NO_IMAGE = "no_image"
    """No image ever arrives (the adapter answers once its own wait is over)."""
    SLOW = "slow"
    """An analysis still running 0.5 s after it started (the kit then cancels it)."""
    HEAVY = "heavy"
    """The costliest parcel the adapter meets (a large image): together, several such
    analyses take well over 0.25 s of work."""


@dataclass(frozen=True)
class Parcel:
    line: str
    tracking_id: int
    hawb: str


@dataclass(frozen=True)
class XrayContext:
    alarms: AlarmSink
    folder: Path
    """An empty folder of the rule's own (model files, scanner folders)."""


class XrayHarness(Protocol):
    @property
    def xray(self) -> XrayPort: ...

    async def parcel(self, case: XrayCase, index: int = 0) -> Parcel:
        """Ready one analysis that meets ``case`` (send its image, if any) and name its parcel.
        Each call readies one analysis: call again to analyse the same ``index`` again.
        Raise NotImplementedError for a case the adapter cannot meet."""
        ...


class XrayKit(Kit, Protocol):
    def open(self, ctx: XrayContext) -> AbstractAsyncContextManager[XrayHarness]: ...


# --- image sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageContext:
    matcher: ImageMatcher
    """Where the source delivers (CargoGate's matcher; hold_s is short for the rules)."""
    sources: SourceContext
    """What an image source's factory gets: build yours through it, as the site would."""
    folder: Path
    """An empty folder of the rule's own (an inbox, a scanner's outbox)."""
    alarms: AlarmSink


class ImageHarness(Protocol):
    @property
    def source(self) -> object:
        """The image source under test, not started: the kit enters it if it is an async
        context manager and runs its ``run()`` as a task, as the controller does."""
        ...

    @property
    def line(self) -> str | None:
        """The line the source serves (None: every line)."""
        ...

    async def send(self, hawb: str, pixels: Any) -> None:
        """Have the scanner send a readable image of ``pixels`` (a uint16 H×W numpy array)
        for ``hawb``, as it would on the floor (write the file, push the dataset). Must not
        block the event loop (write files on a worker thread)."""
        ...

    async def send_damaged(self, hawb: str) -> None:
        """Have the scanner send an image for ``hawb`` that cannot be read."""
        ...

    async def send_keyless(self, pixels: Any) -> None:
        """Have the scanner send a readable image that names no parcel."""
        ...


class ImageKit(Kit, Protocol):
    def open(self, ctx: ImageContext) -> AbstractAsyncContextManager[ImageHarness]: ...


# --- risk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestRecord:
    """One record as a manifest carries it, every field as text: the rules publish bad values
    on purpose (a channel PURPLE, a score 1.7), so write them as they are."""

    hawb: str
    channel: str
    score: str
    declared_goods: str = ""
    flight: str = ""


@dataclass(frozen=True)
class RiskContext:
    folder: Path
    """An empty folder of the rule's own (manifest files)."""
    alarms: AlarmSink


class RiskHarness(Protocol):
    @property
    def feed(self) -> RiskFeed:
        """The feed under test; the kit loads what it fetches into CargoGate's risk book."""
        ...

    async def publish(self, records: Sequence[ManifestRecord]) -> list[int]:
        """Make the source offer ``records`` besides what it offered before (a new manifest
        file, a new page), and return where each sits as your feed's problems name places:
        its line number, or its record number."""
        ...


@runtime_checkable
class OutageControls(Protocol):
    """For risk:outage."""

    async def outage(self, down: bool) -> None:
        """Make the source unreachable (``down``) or reachable again, what it held intact."""
        ...


class RiskKit(Kit, Protocol):
    def open(self, ctx: RiskContext) -> AbstractAsyncContextManager[RiskHarness]: ...
