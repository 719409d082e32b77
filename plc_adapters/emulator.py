"""The PLC's half of the sorter contract, emulated behind a real OPC UA or Modbus TCP server.

:class:`EmulatedPlc` is what a PLC programmer implements, written once in Python: a scan
cycle over the shared layout that publishes telegrams from a backlog into the telegram ring
(raising *mailbox full* when the controller falls behind), consumes the reply ring, counts its
heartbeat, watches the controller's, grants the PLC to one controller at a time (``CtlOwner``:
a claim is refused while another controller's heartbeat is alive), and keeps per-parcel
tracking so that at divert time :meth:`EmulatedPlc.lane_for` says where the parcel goes. It
starts in its safe state, as the contract says a PLC does until its owner's heartbeat moves.
What a PLC does with a reply (credited only if it arrived by the parcel's decision point; safe
state; lane full; lap limit; lost tracking) is not written here but in
:mod:`plc_adapters.rulebook`, which the twin's plant applies too.

Only replies the PLC credits reach ``on_reply`` (the plant acts on those alone, as a real
sorter would); ``on_reply_taken`` sees every reply read from the ring.

It implements :class:`plc_adapters.plant_side.PlantSide`, so the stand-in plant, the SimPy twin
and the tests drive it exactly like the in-process sorter. The server (a
:class:`plc_adapters.server_image.ServerImage`: :mod:`plc_adapters.opcua_server` or
:mod:`plc_adapters.modbus_server`) can be stopped and started again on the same port while the
PLC memory and scan cycle carry on, as a PLC's communication module restarts without losing the
program state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from controller.core.clock import Clock
from controller.core.domain import DestinationReply, DivertStatus, LaneStatus
from controller.core.reasons import Reason
from controller.core.settings import Line
from plc_adapters import rulebook
from plc_adapters.layout import (
    LAYOUT_VERSION,
    Key,
    Layout,
    Owner,
    PackMLState,
    PlcFlags,
    TelegramKind,
    Value,
    header,
    u32_add,
    u32_diff,
    zero,
)
from plc_adapters.plant_side import ReplyHandler
from plc_adapters.server_image import ServerImage
from plc_adapters.shutdown import bounded, cancel_and_wait
from plc_adapters.telegrams import RawTelegram

log = logging.getLogger(__name__)

_CTL_OWNER = header("ctl_owner")

_COLD_START_ZEROED = frozenset(
    (
        "plc_heartbeat",
        "ctl_heartbeat",
        "ctl_owner",
        "plc_flags",
        "tel_write",
        "tel_ack",
        "rep_write",
        "rep_ack",
    )
)
"""Header words a cold start zeroes (section 6.2): every counter, both heartbeats, the owner
and the flags."""


@dataclass(slots=True)
class Tracked:
    """A parcel the PLC is tracking between its scan and its divert.

    ``deadline`` is its decision point; ``reply`` the last reply credited to it (arrived by
    then), taken at ``replied_at``; ``laps`` how often it has recirculated so far."""

    scan_time: float
    deadline: float
    laps: int = 0
    reply: DestinationReply | None = None
    replied_at: float | None = None
    lost: bool = False


@dataclass(frozen=True, slots=True)
class PlcTiming:
    """Scan and heartbeat pacing of the emulated PLC (seconds of wall time)."""

    scan_s: float = 0.002
    heartbeat_period_s: float = 0.25
    heartbeat_timeout_s: float = 2.0
    backlog_limit: int = 10_000


class EmulatedPlc:
    """One line's sorter PLC. Use as ``async with`` (starts the scan cycle and the server)."""

    def __init__(
        self,
        line: Line,
        layout: Layout,
        image: ServerImage,
        clock: Clock,
        timing: PlcTiming | None = None,
        on_reply: ReplyHandler | None = None,
    ) -> None:
        self.line = line.id
        self.config = line
        self.layout = layout
        self.image = image
        self.clock = clock
        self.timing = timing or PlcTiming()
        self.on_reply = on_reply
        """Called for every reply the PLC credits to a parcel it tracks (section 5, item 3)."""
        self.on_reply_taken: ReplyHandler | None = None
        """Called for every reply read from the ring, credited or not (observers, tests)."""
        self.default_lane = rulebook.default_lane(line)
        self._lane_ids = {lane.id for lane in line.lanes}
        self.mem: dict[Key, Value] = {f.key: zero(f.type) for f in layout}
        self._owners = {f.key: f.owner for f in layout}
        self._epoch = clock.now()
        self._seq = 1  # the next telegram sequence number (u32, wraps to 0)
        self._backlog: deque[RawTelegram] = deque()
        self._sent: OrderedDict[int, RawTelegram] = OrderedDict()
        self.tracked: OrderedDict[int, Tracked] = OrderedDict()
        self._laps: OrderedDict[int, int] = OrderedDict()  # recirculating: laps so far
        self._lanes: dict[int, int] = {}  # status words, as the lane table shows them
        self._wake = asyncio.Event()
        self._scan_task: asyncio.Task[None] | None = None
        self.serving = False
        self.heartbeat_frozen = False
        self.safe_state = True  # no owner yet (section 4.5)
        self.claims_refused = 0
        self._refused_claimant = 0  # the last claimant refused, logged once per claimant
        self.replies_received = 0
        self.replies_late = 0
        self.replies_invalid = 0
        self.replies_unmatched = 0
        self.telegrams_dropped = 0
        self.cold_starts = 0
        self._ctl_beat: Value = 0
        self._ctl_beat_at = -math.inf  # no controller heartbeat seen since the owner came
        self._next_beat = 0.0
        self._flags = PlcFlags(0)
        self._lane_rows: dict[int, int] = {}
        for name, value in (
            ("layout_version", LAYOUT_VERSION),
            ("ring_size", layout.ring_size),
            ("lane_slots", layout.lane_slots),
            ("line_state", PackMLState.EXECUTE),
        ):
            self.mem[header(name)] = int(value)
        for lane in line.lanes[: layout.lane_slots]:
            self.set_lane_status(lane.id, LaneStatus.AVAILABLE)

    # --- PlantSide ---------------------------------------------------------------------------

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        """A parcel left the scan tunnel; start tracking it and queue its destination request."""
        seq = self.next_seq()
        deadline = rulebook.decision_point(scan_time, self.config.belt.decision_window_s)
        self.tracked[tracking_id] = Tracked(scan_time, deadline, self._laps.pop(tracking_id, 0))
        self.tracked.move_to_end(tracking_id)
        while len(self.tracked) > 100_000:
            self.tracked.popitem(last=False)
        # non-ASCII reaches the wire and is flagged; a barcode too long for the field is never
        # cut to a valid-looking one (the Modbus image marks it, OPC UA carries it whole)
        encoded = barcode.encode("utf-8")
        self._queue(
            RawTelegram(
                seq,
                TelegramKind.DESTINATION_REQUEST,
                tracking_id,
                self._ticks(scan_time),
                0,
                0,
                encoded,
            )
        )
        return seq

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        seq = self.next_seq()
        self._queue(
            RawTelegram(seq, TelegramKind.DIVERT_CONFIRMATION, tracking_id, 0, lane, status)
        )
        return seq

    def set_lane_status(self, lane: int, status: LaneStatus) -> None:
        self._lanes[lane] = status
        row = self._lane_rows.get(lane)
        if row is None:
            if len(self._lane_rows) >= self.layout.lane_slots:
                log.error(
                    "line %s: lane table full, status of lane %d not published", self.line, lane
                )
                return
            row = self._lane_rows[lane] = len(self._lane_rows)
            self._set(("lane", row, "id"), lane)
        self._set(("lane", row, "status"), int(status))

    def lane_for(self, tracking_id: int, missed: bool = False) -> tuple[int, DivertStatus]:
        """Where the parcel goes at its divert, decided now, and the status to confirm with:
        :func:`plc_adapters.rulebook.disposition` over this PLC's state (the reply credited to
        the parcel, the controller heartbeat, the lane table, the parcel's laps). ``missed``
        says the parcel passed its divert point (the PLC's photo-eyes; a stand-in plant draws
        it). Forgets the parcel's tracking entry: a recirculated parcel is requested again on
        its next lap, and its lap count carries over to that request.
        """
        tracked = self.tracked.pop(tracking_id, None)
        reply = tracked.reply if tracked is not None else None
        laps = tracked.laps if tracked is not None else 0
        lane, status = rulebook.disposition(
            reply.lane if reply is not None else None,
            self.default_lane,
            self._lane_ids,
            self._lanes,
            lap_limit=self.config.lap_limit,
            heartbeat_alive=not self.safe_state,
            laps=laps,
            missed=missed,
            tracking_lost=tracked is not None and tracked.lost,
        )
        if rulebook.recirculates(status):
            self._laps[tracking_id] = laps + 1
            while len(self._laps) > 100_000:
                self._laps.popitem(last=False)
        return lane, status

    def lose_tracking(self, tracking_id: int) -> None:
        """The PLC loses track of the parcel (a jam, a photo-eye fault): at its divert it goes
        to the default lane and is confirmed with ``LOST_TRACKING`` (section 5, item 5)."""
        tracked = self.tracked.get(tracking_id)
        if tracked is None:
            tracked = self.tracked[tracking_id] = Tracked(math.nan, math.nan)
        tracked.lost = True

    # --- commissioning and test hooks --------------------------------------------------------

    def inject(self, raw: RawTelegram) -> None:
        """Publish a telegram slot exactly as given (no tracking, no sequence number drawn):
        for checking that the controller rejects malformed telegrams."""
        self._queue(raw)

    def next_seq(self) -> int:
        """Draw the next telegram sequence number (for a telegram built by hand); u32, so it
        wraps from 4 294 967 295 to 0 as the contract says."""
        seq, self._seq = self._seq, u32_add(self._seq, 1)
        return seq

    def set_next_seq(self, seq: int) -> None:
        """Number the next telegram ``seq`` (0..2**32-1): to exercise the wrap, or a PLC that
        renumbers its telegrams without a cold start."""
        self._seq = u32_add(seq, 0)

    def preset_counters(self, counter: int) -> None:
        """Set all four ring counters to ``counter``, as if this many slots had gone round,
        before any controller connects (to exercise the 2**32 wrap of the ring counters)."""
        for name in ("tel_write", "tel_ack", "rep_write", "rep_ack"):
            self.mem[header(name)] = u32_add(counter, 0)
            self.image.changed(header(name), u32_add(counter, 0))

    def cold_start(self, keep_slots: bool, keep_flags: bool = False) -> None:
        """Restart the PLC program from cold (section 6.2): every counter, heartbeat and flag
        to zero, ``Seq`` from 1, the millisecond tick from 0, tracked parcels, laps and the
        telegram backlog forgotten. ``keep_slots`` keeps the old contents of every ring slot
        (the contract asks only for the counters to be zeroed), else they are zeroed too;
        ``keep_flags`` plays a PLC that keeps its latched flags. The server keeps serving (a
        communication module that stays up); stop it around this call for a cold start that
        also drops the link."""
        self.cold_starts += 1
        for f in self.layout:
            area, _, name = f.key
            if (
                area == "header"
                and name in _COLD_START_ZEROED
                and not (keep_flags and name == "plc_flags")
            ) or (area in ("telegram", "reply") and not keep_slots):
                self._set(f.key, zero(f.type))
        self._seq = 1
        self._epoch = self.clock.now()
        self._backlog.clear()
        self._sent.clear()
        self.tracked.clear()
        self._laps.clear()
        if not keep_flags:
            self._flags = PlcFlags(0)
        self._ctl_beat, self._ctl_beat_at = 0, -math.inf
        self.safe_state = True
        self._next_beat = 0.0
        log.warning(
            "line %s: PLC cold start (ring slots %s)",
            self.line,
            "kept" if keep_slots else "zeroed",
        )
        self._wake.set()

    def latch_reply_error(self) -> None:
        """Latch flag bit 3 as a bad reply slot would (for checking the controller's alarm)."""
        self._set_flag(PlcFlags.REPLY_ERROR, True)
        self._wake.set()

    def set_lane_word(self, lane: int, word: int) -> None:
        """Publish a raw status word for ``lane`` (commissioning: a value outside 0..2 checks
        that the controller treats it as blocked and says so once)."""
        row = self._lane_rows.get(lane)
        if row is None:
            raise KeyError(f"lane {lane} is not in this PLC's lane table")
        self._lanes[lane] = word  # the PLC's own divert treats it as not available
        self._set(("lane", row, "status"), word)

    def resend(self, seq: int) -> None:
        """Publish a recent telegram again, identical, as a PLC may after a comms fault."""
        self._queue(self._sent[seq])

    def freeze_heartbeat(self, frozen: bool = True) -> None:
        """Stop (or resume) counting the PLC heartbeat, as a stopped PLC program would."""
        self.heartbeat_frozen = frozen

    def set_line_state(self, state: PackMLState) -> None:
        self._set(header("line_state"), int(state))

    @property
    def owner_id(self) -> int:
        """The controller that owns the PLC (``CtlOwner``, section 4.5); 0 for none."""
        return self._int(_CTL_OWNER)

    @property
    def mailbox_full(self) -> bool:
        return bool(self._flags & PlcFlags.MAILBOX_FULL)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> EmulatedPlc:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the scan cycle (if not running) and the server."""
        if not self.serving:
            await self.image.start(self)
            self.serving = True
        if self._scan_task is None:
            self._ctl_beat_at = time.monotonic()
            self._scan_task = asyncio.get_running_loop().create_task(self._scan_forever())

    async def stop_server(self) -> None:
        """Stop serving; the PLC's memory and scan cycle carry on."""
        if self.serving:
            self.serving = False
            await bounded(self.image.stop(), f"emulated PLC {self.line} server stop")

    async def aclose(self, stop_server: bool = True) -> None:
        """Stop the scan cycle and (unless told not to, for a shared endpoint) the server."""
        if stop_server:
            await self.stop_server()
        self.serving = False
        await cancel_and_wait(self._scan_task, f"emulated PLC {self.line} scan cycle")
        self._scan_task = None

    # --- what the image calls ----------------------------------------------------------------

    def owner(self, key: Key) -> Owner | None:
        return self._owners.get(key)

    def written(self, key: Key, value: Value) -> bool:
        """The controller wrote ``key``; False (refused) if the PLC owns it, or if it is a
        claim (``CtlOwner``) while another controller owns the PLC."""
        if self._owners.get(key) is not Owner.CONTROLLER:
            return False
        if key == _CTL_OWNER and not self._claim(value):
            return False
        self.mem[key] = value
        self._wake.set()
        return True

    def _claim(self, value: Value) -> bool:
        """Section 4.5: rewriting the owner's own id, or releasing (0), always stands; another
        id takes the PLC only while it has no live owner (it is in its safe state). A granted
        claim counts as the new owner's first heartbeat."""
        owner = self.mem[_CTL_OWNER]
        if value in (owner, 0):
            if value == 0 and owner != 0:
                log.info("line %s: controller %s released the PLC", self.line, owner)
                self.safe_state = True
            return True
        if owner != 0 and not self.safe_state:
            self.claims_refused += 1
            if value != self._refused_claimant:
                self._refused_claimant = int(value) if isinstance(value, int) else -1
                log.warning(
                    "line %s: claim by controller %s refused: controller %s owns the PLC and "
                    "its heartbeat is alive",
                    self.line,
                    value,
                    owner,
                )
            return False
        log.info("line %s: controller %s owns the PLC (was %s)", self.line, value, owner or "none")
        self._ctl_beat, self._ctl_beat_at = self.mem[header("ctl_heartbeat")], time.monotonic()
        self._refused_claimant = 0
        self.safe_state = False  # owned from now: a second claim before the next scan is refused
        return True

    def clock_ms(self) -> int:
        """The PLC's millisecond tick, live (what ``plc_clock_ms`` reads)."""
        return self._ticks(self.clock.now())

    # --- the scan cycle ----------------------------------------------------------------------

    async def _scan_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timing.scan_s):  # wait_for can eat a cancel
                    await self._wake.wait()
            self._wake.clear()
            try:
                self._scan()
                if self.serving:
                    await self.image.flush()
            except Exception:  # a PLC keeps scanning; the fault is logged
                log.exception("line %s: emulated PLC scan failed", self.line)

    def _scan(self) -> None:
        now = time.monotonic()
        self._watch_controller(now)
        self._take_replies()
        self._publish_telegrams()
        if now >= self._next_beat and not self.heartbeat_frozen:
            self._next_beat = now + self.timing.heartbeat_period_s
            beat = self.mem[header("plc_heartbeat")]
            assert isinstance(beat, int)
            self._set(header("plc_heartbeat"), (beat + 1) & 0xFFFF)
        self._set_flag(PlcFlags.SAFE_STATE, self.safe_state)
        self._set(header("plc_flags"), int(self._flags))

    def _watch_controller(self, now: float) -> None:
        """Safe state while no controller owns the PLC or its heartbeat has stalled."""
        beat = self.mem[header("ctl_heartbeat")]
        if beat != self._ctl_beat:
            self._ctl_beat, self._ctl_beat_at = beat, now
        owner = self.mem[_CTL_OWNER]
        lost = rulebook.heartbeat_lost(now, self._ctl_beat_at, self.timing.heartbeat_timeout_s)
        safe = owner == 0 or lost
        if safe == self.safe_state:
            return
        self.safe_state = safe
        if not safe:
            log.info(
                "line %s: controller %s heartbeat seen; leaving the safe state", self.line, owner
            )
        elif owner != 0:
            log.warning(
                "line %s: controller %s heartbeat stalled for %.1f s; safe state: default lane %d",
                self.line,
                owner,
                now - self._ctl_beat_at,
                self.default_lane,
            )

    def _take_replies(self) -> None:
        rep_write, rep_ack = self._int(header("rep_write")), self._int(header("rep_ack"))
        if not 0 <= u32_diff(rep_write, rep_ack) <= self.layout.ring_size:
            if rep_write != rep_ack:
                log.error(
                    "line %s: reply writer index %d is not within one ring of the ack %d",
                    self.line,
                    rep_write,
                    rep_ack,
                )
                self._set_flag(PlcFlags.REPLY_ERROR, True)
            return
        now = self.clock.now()
        while rep_ack != rep_write:
            position = u32_add(rep_ack, 1)
            seq, tracking_id, lane, reason = (
                self._int(k) for k in self.layout.reply_keys(self.layout.slot(position))
            )
            rep_ack = position
            if seq != position:
                log.error(
                    "line %s: reply slot for position %d carries seq %d; skipped",
                    self.line,
                    position,
                    seq,
                )
                self._set_flag(PlcFlags.REPLY_ERROR, True)
                continue
            if tracking_id == 0:
                continue  # a void reply: the controller withdrew it (section 4.2)
            self._accept_reply(tracking_id, lane, reason, now)
        self._set(header("rep_ack"), rep_ack)

    def _accept_reply(self, tracking_id: int, lane: int, reason: int, now: float) -> None:
        self.replies_received += 1
        try:
            why = Reason(reason)
        except ValueError:
            why = Reason.MALFORMED_TELEGRAM
        reply = DestinationReply(self.line, tracking_id, lane, why)
        if lane not in self._lane_ids:
            self.replies_invalid += 1
            log.error(
                "line %s: reply for tracking id %d names lane %d, not a lane of this line; "
                "the parcel goes to the default lane %d",
                self.line,
                tracking_id,
                lane,
                self.default_lane,
            )
        if self.on_reply_taken is not None:
            self.on_reply_taken(reply)
        tracked = self.tracked.get(tracking_id)
        if tracked is None:  # never requested, or long gone: nothing to apply it to
            self.replies_unmatched += 1
            log.debug("line %s: reply for untracked id %d ignored", self.line, tracking_id)
            return
        if not rulebook.reply_credited(now, tracked.deadline):
            self.replies_late += 1  # a real PLC ignores it: the default lane stands
            log.debug(
                "line %s: reply for tracking id %d came %.3f s after its decision point; ignored",
                self.line,
                tracking_id,
                now - tracked.deadline,
            )
            return
        tracked.reply, tracked.replied_at = reply, now
        if self.on_reply is not None:
            self.on_reply(reply)

    def _publish_telegrams(self) -> None:
        tel_write, tel_ack = self._int(header("tel_write")), self._int(header("tel_ack"))
        used = u32_diff(tel_write, tel_ack)
        if not 0 <= used <= self.layout.ring_size:
            used = self.layout.ring_size  # the ack makes no sense: write nothing
        start = tel_write
        while used < self.layout.ring_size and self._backlog:
            raw = self._backlog.popleft()
            tel_write = u32_add(tel_write, 1)
            slot = self.layout.slot(tel_write)
            values: tuple[Value, ...] = (
                raw.seq,
                raw.kind,
                raw.tracking_id,
                raw.scan_ms,
                raw.lane,
                raw.status,
                raw.barcode,
            )
            for key, value in zip(self.layout.telegram_keys(slot), values, strict=True):
                self._set(key, value)
            used += 1
        if tel_write != start:
            self._set(header("tel_write"), tel_write)  # after the slots: the reader may go
        self._set_flag(PlcFlags.MAILBOX_FULL, bool(self._backlog))

    # --- helpers -----------------------------------------------------------------------------

    def _queue(self, raw: RawTelegram) -> None:
        if len(self._backlog) >= self.timing.backlog_limit:
            self.telegrams_dropped += 1
            self._set_flag(PlcFlags.TELEGRAMS_DROPPED, True)
            log.error(
                "line %s: PLC backlog full (%d telegrams); telegram seq %d dropped",
                self.line,
                self.timing.backlog_limit,
                raw.seq,
            )
            return
        self._backlog.append(raw)
        self._sent[raw.seq] = raw
        while len(self._sent) > 4096:
            self._sent.popitem(last=False)
        self._wake.set()

    def _ticks(self, at: float) -> int:
        return math.floor((at - self._epoch) * 1000) & 0xFFFFFFFF

    def _set(self, key: Key, value: Value) -> None:
        if self.mem.get(key) != value:
            self.mem[key] = value
            self.image.changed(key, value)

    def _set_flag(self, flag: PlcFlags, on: bool) -> None:
        self._flags = self._flags | flag if on else self._flags & ~flag

    def _int(self, key: Key) -> int:
        value = self.mem[key]
        assert isinstance(value, int)
        return value
