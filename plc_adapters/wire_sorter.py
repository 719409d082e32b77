"""The controller's side of the sorter contract over any wire protocol.

:class:`WireSorter` implements :class:`controller.core.ports.SorterPort` on top of a
:class:`plc_adapters.transport.Transport` (OPC UA or Modbus TCP). It is the only owner of its
connection: one supervisor task connects, resynchronises both rings, then runs the cycle
(read header → read new telegram slots → acknowledge → write replies → heartbeat) until the
link fails, and reconnects with capped exponential backoff. Telegrams are delivered in PLC
order, each exactly once, across reconnects; ``TelAck`` advances only over telegrams the
controller acknowledged (their entries are durable), so a telegram a crash caught before its
entries were journalled is read again by the next controller, marked ``redelivered``. Replies
are kept until the PLC acknowledges them and rewritten after a reconnect if their index write
was lost, so none is lost or doubled. The adapter writes nothing but its claim until the PLC
shows it as its owner (``CtlOwner``), so a second controller is refused, never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from controller.core.clock import Clock
from controller.core.domain import DestinationReply, DestinationRequest, LaneStatus, Telegram
from controller.core.link import LinkState
from controller.core.ports import AlarmSink
from controller.core.views import SorterHealth
from plc_adapters.layout import (
    LAYOUT_VERSION,
    Key,
    Layout,
    PackMLState,
    PlcFlags,
    TelegramKind,
    Value,
    header,
    u32_add,
    u32_diff,
)
from plc_adapters.plc_clock import PlcClockMapper
from plc_adapters.shutdown import bounded, cancel_and_wait
from plc_adapters.telegrams import RawTelegram, TelegramChecker, known_kind
from plc_adapters.transport import LinkDownError, LinkRejectedError, Transport

log = logging.getLogger(__name__)

_FLAG_ALARMS = {
    PlcFlags.SAFE_STATE: (
        "plc-safe-state",
        "PLC in its safe state: it lost the controller heartbeat; parcels go to the default lane",
    ),
    PlcFlags.MAILBOX_FULL: (
        "plc-mailbox-full",
        "PLC telegram mailbox full: telegrams wait in the PLC's backlog",
    ),
    PlcFlags.TELEGRAMS_DROPPED: (
        "plc-telegrams-dropped",
        "PLC backlog overflowed: some parcels were defaulted without a request",
    ),
    PlcFlags.REPLY_ERROR: (
        "plc-reply-error",
        "PLC found a reply slot with an unexpected sequence number",
    ),
}


_STATE_ALARMS = {
    PackMLState.HELD: (
        "plc-held",
        "PLC holds the line (PackML Held): parcels wait; the controller keeps serving",
    ),
    PackMLState.ABORTED: (
        "plc-aborted",
        "PLC aborted the line (PackML Aborted): a fault stopped it; the controller keeps serving",
    ),
}
"""PackML states that raise an alarm while the PLC is in them (docs/plc-interface.md, 3.5)."""


_PENDING_LIMIT = 20_000
"""Replies kept while the link is down (memory bound only: the PLC judges lateness)."""

_RECHECK_S = 0.05
"""How long after a suspicious read of a counter this side owns it is read again: a value
this side never wrote is a cold start only if it is still there (not a stale copy)."""

_Request = tuple[int, int, float]
"""A tracking id's last request: the PLC run (epoch), its sequence number, when it came."""

_REQUESTS_KEPT_S = 600.0
"""How long (controller clock) a tracking id's last request (PLC run and sequence number) is
remembered, to drop a reply decided for a parcel requested before a PLC restart or before its
next lap's request: far beyond any decision window and lap, so no reply outlives it, while
memory stays flat (a line at 20,000 parcels/h keeps ~3,300)."""


class PlcOwnedError(LinkRejectedError):
    """Another controller owns the PLC (docs/plc-interface.md, section 4.5): this one writes
    nothing and retries its claim slowly."""


def new_owner_id() -> int:
    """A controller id for ``CtlOwner``: random per adapter, 1…65535, so two controllers
    started from the same site file still differ."""
    return secrets.randbelow(0xFFFF) + 1


@dataclass(slots=True)
class _Written:
    """What this side last wrote to one of its counters in the PLC (``TelAck``, ``RepWrite``):
    the PLC shows ``confirmed``, or ``in_flight`` if a write was cut off unanswered. Any other
    value means the PLC changed it, which only a cold start does (section 6.2)."""

    confirmed: int
    in_flight: int | None = None

    def shows(self, value: int) -> bool:
        return value in (self.confirmed, self.in_flight)


@dataclass(slots=True)
class _Taken:
    """A telegram slot read at ring ``position``: ``telegram`` as delivered (None when it was
    not: a duplicate or an unknown kind), ``acked`` once the controller acknowledged it."""

    position: int
    telegram: Telegram | None
    acked: bool


@dataclass(frozen=True, slots=True)
class LinkTiming:
    """How the adapter paces and supervises its link (seconds of wall time)."""

    poll_s: float = 0.005
    heartbeat_period_s: float = 0.25
    heartbeat_timeout_s: float = 2.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    clock_staleness_s: float = 0.02
    slots_per_read: int = 16
    prefetch_slots: int = 0
    """Telegram slots read with the header, in the same request (saves a round trip)."""
    lane_poll_s: float = 0.05


class WireSorter:
    """One sorter line over a wire; see the module docstring for the contract.

    A PLC restart (section 6.2 of docs/plc-interface.md) is told from the counters: ``TelWrite``
    behind the telegrams already read, ``RepAck`` going back or past ``RepWrite``, or a counter
    this side owns showing a value it never wrote (seen twice, to rule out a stale read). Both
    rings then follow the PLC's counters, and every reply decided for a parcel requested before
    the restart is dropped, never written onto the new ring where it could steer a new parcel
    that happens to carry the same tracking id. A reply still waiting when a newer request for
    its tracking id arrives (the parcel's next lap) is dropped for the same reason.

    ``owner_id`` is what this adapter writes to ``CtlOwner`` (section 4.5; random unless given).
    """

    def __init__(
        self,
        line: str,
        transport: Transport,
        layout: Layout,
        clock: Clock,
        alarms: AlarmSink | None = None,
        timing: LinkTiming | None = None,
        owner_id: int | None = None,
    ) -> None:
        if owner_id is not None and not 1 <= owner_id <= 0xFFFF:
            raise ValueError(f"owner_id must be 1..65535, got {owner_id}")
        self.line = line
        self.transport = transport
        self.layout = layout
        self.clock = clock
        self.alarms = alarms
        self.timing = timing or LinkTiming()
        self.owner_id = owner_id or new_owner_id()
        self.checker = TelegramChecker(line, alarms)
        self.mapper = PlcClockMapper(self.timing.clock_staleness_s)
        self.connected = False
        self.connects = 0
        self.line_state: PackMLState | None = None
        self.plc_flags = PlcFlags(0)
        self.plc_heartbeat_ok = False
        self._queue: asyncio.Queue[Telegram | None] = asyncio.Queue()
        self._lanes: dict[int, LaneStatus] = {}
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._heartbeat_held = False
        # ring positions (1-based counters, wrapping at 2**32); None until the first connect
        self._tel_pos: int | None = None
        self._rep_pos: int | None = None
        self._taken: deque[_Taken] = deque()  # read, from the first not acknowledged on
        self._redeliver_to: int | None = None  # positions up to it may be journalled already
        self._pending: deque[tuple[DestinationReply, _Request | None]] = deque()
        # replies in the ring above RepAck, by position: slot values and the request answered
        self._unacked: dict[int, tuple[tuple[int, int, int, int], _Request | None]] = {}
        self._ctl_heartbeat = 0
        self._next_heartbeat = 0.0
        self._plc_heartbeat: int | None = None
        self._plc_heartbeat_at = 0.0
        self._next_lanes = 0.0
        self._rep_ack = 0
        self._signalled = False
        self._link_alarm = False
        self._owner_alarm = False
        self._refused_since: float | None = None  # refused by an owner since, until we own
        self._grace_until = 0.0  # the PLC may still be in its safe state from before we came
        self._alarmed_flags = PlcFlags(0)
        self._written: dict[str, _Written] = {}
        self._suspect = ""  # a restart seen once by an owned counter alone: read again first
        self._suspect_at = 0.0
        self._epoch = 0  # PLC restarts followed so far
        # id -> (epoch, seq, requested at), oldest request first
        self._requests: OrderedDict[int, _Request] = OrderedDict()
        self._masked_flags = PlcFlags(0)  # latched bits cleared by a resync, until they drop
        self._bad_lanes: dict[int, tuple[int, int]] = {}  # lane -> (bad status word, reads)
        self._sample: tuple[float, int] | None = None
        self.restarts = 0
        self.replies_dropped = 0
        """Replies decided before a PLC restart, dropped instead of written to the new ring."""
        self.replies_superseded = 0
        """Replies dropped unwritten because a newer request for their tracking id came."""

    # --- SorterPort --------------------------------------------------------------------------

    async def telegrams(self) -> AsyncIterator[Telegram]:
        self.start()
        while (telegram := await self._queue.get()) is not None:
            yield telegram

    async def reply(self, reply: DestinationReply) -> None:
        """Queue the reply for the reply ring; it is written at once while the link is up.
        A reply for a parcel last requested before a PLC restart is dropped (section 6.2), and
        so is one whose request (``request_seq``) is no longer its tracking id's latest, or
        that is still waiting when a newer request for its tracking id arrives (4.2)."""
        request = self._requests.get(reply.tracking_id)
        if request is not None and request[0] != self._epoch:
            self.replies_dropped += 1
            log.warning(
                "line %s: reply for tracking id %d dropped: the parcel was requested before "
                "the PLC restarted, and the id may now name another parcel",
                self.line,
                reply.tracking_id,
            )
            return
        if request is not None and reply.request_seq not in (None, request[1]):
            self._superseded(reply)  # decided for an earlier request: it must not steer this one
            return
        self._pending.append((reply, request))
        limit = _PENDING_LIMIT
        while len(self._pending) > limit:
            dropped, _ = self._pending.popleft()
            log.error(
                "line %s: reply for tracking id %d dropped: %d replies wait for the PLC link",
                self.line,
                dropped.tracking_id,
                limit,
            )
        self._wake.set()

    def acknowledge(self, telegram: Telegram) -> None:
        """The controller journalled ``telegram``: ``TelAck`` moves over it once every
        telegram before it is acknowledged too, with the next write to the PLC."""
        for taken in self._taken:
            if taken.telegram is telegram:
                taken.acked = True
                break
        else:
            return  # read before a PLC restart (its position is gone), or not from here
        if self._drop_acked():
            self._wake.set()

    def lane_status(self) -> Mapping[int, LaneStatus]:
        return self._lanes

    def health(self) -> SorterHealth:
        """The link, the PLC's PackML state ("" while it reports none: 0 Undefined, which the
        controller counts as running, section 3.5) and its flags as of the last header read."""
        heartbeat_age = time.monotonic() - self._plc_heartbeat_at if self.connected else None
        state = self.line_state
        reported = "" if state is None or state is PackMLState.UNDEFINED else state.name.lower()
        mailbox_full = PlcFlags.MAILBOX_FULL in self.plc_flags
        return SorterHealth(self.link_state, reported, heartbeat_age, mailbox_full)

    @property
    def replies_waiting(self) -> int:
        """Replies handed over and not yet seen taken by the PLC (as of the last header read)."""
        unacked = sum(1 for p in self._unacked if u32_diff(p, self._rep_ack) > 0)
        return len(self._pending) + unacked

    @property
    def unacknowledged(self) -> int:
        """Telegrams read and not yet acknowledged by the controller (they hold ``TelAck``)."""
        return len(self._taken)

    @property
    def link_state(self) -> LinkState:
        """Connecting until the first link is up; up, or degraded while the PLC heartbeat is
        stalled or the PLC is in its safe state; down while reconnecting and once closed."""
        if self.connected:
            impaired = not self.plc_heartbeat_ok or PlcFlags.SAFE_STATE in self.plc_flags
            return LinkState.DEGRADED if impaired else LinkState.UP
        if self.connects == 0 and not (self._link_alarm or self._owner_alarm or self._closing):
            return LinkState.CONNECTING
        return LinkState.DOWN

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start supervising the link (idempotent); :meth:`telegrams` calls it."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def aclose(self) -> None:
        """Stop, close the link and end the telegram stream; never raises. While connected,
        the last acknowledgement is written and the PLC released (``CtlOwner`` 0) first."""
        self._closing = True
        await cancel_and_wait(self._supervisor, f"line {self.line} link supervisor")
        await bounded(self.transport.close(), f"line {self.line} link close")
        self._queue.put_nowait(None)

    async def __aenter__(self) -> WireSorter:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def suspend_heartbeat(self, suspended: bool = True) -> None:
        """Stop (or resume) writing the controller heartbeat, for commissioning: the PLC must
        go to its safe state when it stops. Everything else keeps running."""
        self._heartbeat_held = suspended

    # --- supervision -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.timing.backoff_initial_s
        while not self._closing:
            try:
                await self.transport.connect(self._signal)
                if self._closing:
                    break
                await self._resync()
                self._link_up()
                delay = self.timing.backoff_initial_s
                await self._run_cycles()
            except PlcOwnedError as exc:  # retried with the usual backoff: see _owner_refused
                self._owner_refused(f"PLC at {self.transport.endpoint}: {exc}")
            except LinkRejectedError as exc:
                self._link_lost(f"PLC at {self.transport.endpoint} refused the link: {exc}")
                delay = self.timing.backoff_max_s
            except LinkDownError as exc:
                self._link_lost(f"PLC at {self.transport.endpoint} unreachable: {exc}")
            finally:
                if self._closing and self.connected:
                    await self._release()
                self.connected = False
                await self.transport.close()
            if self._closing:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.backoff_max_s)

    def _link_up(self) -> None:
        self.connected = True
        self.connects += 1
        log.info("line %s: PLC link up (%s)", self.line, self.transport.endpoint)
        if self._link_alarm and self.alarms is not None:
            self.alarms.alarm(f"{self.line}/plc-link", "PLC link restored", active=False)
        self._link_alarm = False
        if self._owner_alarm and self.alarms is not None:
            message = f"this controller ({self.owner_id}) owns the PLC now"
            self.alarms.alarm(f"{self.line}/plc-owner", message, active=False)
        self._owner_alarm = False
        self._refused_since = None

    def _owner_refused(self, message: str) -> None:
        """Another controller owns the PLC. A predecessor that stopped without releasing it
        (killed) loses it within the PLC's heartbeat timeout, so that is waited out quietly;
        refused for twice as long, another controller is alive on this PLC: alarm, once."""
        self.plc_heartbeat_ok = False
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
            log.info("line %s: %s; claiming again until its heartbeat lapses", self.line, message)
        if self._owner_alarm or now - self._refused_since < 2 * self.timing.heartbeat_timeout_s:
            return
        self._owner_alarm = True
        log.error("line %s: %s; claiming again with backoff", self.line, message)
        if self.alarms is not None:
            self.alarms.alarm(f"{self.line}/plc-owner", message, active=True)

    async def _claim(self, h: dict[str, Value]) -> None:
        """Own the PLC before writing anything else (section 4.5): go on if ``CtlOwner``
        shows this controller; claim it if it is free (0) or its owner's heartbeat has
        stalled (the PLC is in its safe state); else, or if the PLC refuses or overrules
        the claim, raise :class:`PlcOwnedError`."""
        owner = _u(h, "ctl_owner")
        if owner == self.owner_id:
            return
        if owner != 0 and not _u(h, "plc_flags") & PlcFlags.SAFE_STATE:
            raise PlcOwnedError(
                f"controller {owner} owns the PLC and its heartbeat is alive; this "
                f"controller ({self.owner_id}) writes nothing to it"
            )
        try:
            await self._write([(header("ctl_owner"), self.owner_id)])
        except LinkRejectedError as exc:
            raise PlcOwnedError(
                f"the PLC refused the claim of this controller ({self.owner_id}): {exc}"
            ) from None
        shown = _int((await self.transport.read([header("ctl_owner")]))[0])
        if shown != self.owner_id:
            raise PlcOwnedError(
                f"the PLC kept controller {shown} as its owner over the claim of this "
                f"controller ({self.owner_id})"
            )
        taken = f", taken over from controller {owner} (its heartbeat had stalled)" if owner else ""
        log.info("line %s: this controller (%d) owns the PLC%s", self.line, self.owner_id, taken)

    async def _release(self) -> None:
        """Closing: write the last acknowledgement and ``CtlOwner`` 0, so the next controller
        reads no telegram twice that it need not and takes the PLC at once. Only while the PLC
        still shows this controller as its owner, read just before: another controller may
        have taken it over since the last header (this one's heartbeat had stalled), and a 0
        written then would take the PLC from that live owner."""
        if self._suspect:
            return  # a restart is suspected: write nothing
        writes: list[tuple[Key, Value]] = []
        ack = self._ack_due()
        if ack is not None:
            writes.append((header("tel_ack"), ack))
        writes.append((header("ctl_owner"), 0))
        try:
            async with asyncio.timeout(1.0):
                owner = _int((await self.transport.read([header("ctl_owner")]))[0])
                if owner != self.owner_id:
                    log.info(
                        "line %s: PLC not released on close: controller %d owns it now",
                        self.line,
                        owner,
                    )
                    return
                await self._write(writes)
        except (LinkDownError, TimeoutError) as exc:
            log.info("line %s: PLC not released on close (%s)", self.line, exc)

    def _link_lost(self, message: str) -> None:
        self.plc_heartbeat_ok = False
        if not self._link_alarm:  # log once per outage
            log.warning("line %s: %s; retrying with backoff", self.line, message)
            if self.alarms is not None:
                self.alarms.alarm(f"{self.line}/plc-link", message, active=True)
        self._link_alarm = True

    async def _read_header(self, lanes: bool = True) -> tuple[dict[str, Value], list[Value]]:
        """Header fields by name (and the lane table when ``lanes``), plus the slots after our
        position prefetched in the same request (``LinkTiming.prefetch_slots``)."""
        keys = list(self.layout.header_keys)
        if lanes:
            keys += self.layout.lane_keys
            self._next_lanes = time.monotonic() + self.timing.lane_poll_s
        prefetch: list[Key] = []
        if self._tel_pos is not None:
            for k in range(self.timing.prefetch_slots):
                position = u32_add(self._tel_pos, k + 1)
                prefetch += self.layout.telegram_keys(self.layout.slot(position))
        sent = self.clock.now()
        values = await self.transport.read(keys + prefetch)
        fields = {f"{area}.{i}.{name}": v for (area, i, name), v in zip(keys, values, strict=False)}
        self._sample = (sent, _u(fields, "plc_clock_ms"))
        self.mapper.sample(*self._sample)
        return fields, values[len(keys) :]

    async def _resync(self) -> None:
        """Check the PLC's layout and line both rings up with what this side already did, or
        with the PLC's counters if it restarted meanwhile."""
        h, _ = await self._read_header()
        expected = {
            "layout_version": LAYOUT_VERSION,
            "ring_size": self.layout.ring_size,
            "lane_slots": self.layout.lane_slots,
        }
        for name, want in expected.items():
            got = _u(h, name)
            if got != want:
                raise LinkRejectedError(f"PLC reports {name} {got}, the settings expect {want}")
        await self._claim(h)
        restart = self._restart_evidence(h)
        if restart is not None and not restart[1]:
            await asyncio.sleep(_RECHECK_S)  # an owned counter alone: read it again
            h, _ = await self._read_header()
            restart = self._restart_evidence(h)
        if self._tel_pos is None or self._rep_pos is None:
            await self._seed_sequence(h)
            self._adopt(h)
        elif restart is not None:
            await self._follow_restart(h, restart[0])
        else:
            await self._continue(h)
        self._suspect = ""
        self._plc_heartbeat_at = self._next_heartbeat = time.monotonic()
        self._grace_until = self._plc_heartbeat_at + self.timing.heartbeat_timeout_s
        self._observe(h)
        if _u(h, "plc_flags") & PlcFlags.SAFE_STATE:
            log.info(
                "line %s: PLC in its safe state at connect, as it is until it sees a "
                "controller heartbeat; alarm only if it is still there in %g s",
                self.line,
                self.timing.heartbeat_timeout_s,
            )

    async def _seed_sequence(self, h: dict[str, Value]) -> None:
        """First contact: show the duplicate check the telegrams a controller before this one
        acknowledged that the ring still holds (up to ``TelAck``, this PLC run's only), as
        that controller's check knew them. A PLC that publishes one of them again (a
        duplicate, section 6) is then ignored here too, not taken as a new telegram that
        would reopen or decide again a parcel already journalled, and the numbering goes on
        from them. Slots the PLC may be rewriting meanwhile are left out."""
        n = self.layout.ring_size
        tel_write, tel_ack = _u(h, "tel_write"), _u(h, "tel_ack")
        used = u32_diff(tel_write, tel_ack)
        if not 0 <= used <= n:
            return
        margin = max(1, n // 4)  # telegrams the PLC may publish while the slots are read
        count = min(tel_ack, n - used - margin)  # positions from 1: since the PLC's start
        if count <= 0:
            return
        positions = [tel_ack - count + 1 + k for k in range(count)]
        width = len(self.layout.telegram_keys(0))
        slots: list[tuple[int, list[Value]]] = []
        step = self.timing.slots_per_read
        for start in range(0, count, step):
            chunk = positions[start : start + step]
            keys = [k for p in chunk for k in self.layout.telegram_keys(self.layout.slot(p))]
            values = await self.transport.read(keys)
            slots += [(p, values[i * width : (i + 1) * width]) for i, p in enumerate(chunk)]
        tel_write = _int((await self.transport.read([header("tel_write")]))[0])
        oldest_intact = u32_add(tel_write, margin - n)  # older ones may hold newer telegrams
        seeds = [
            raw
            for p, values in slots
            if u32_diff(p, oldest_intact) > 0 and known_kind(raw := _raw_telegram(values))
        ]
        for raw in seeds:
            self.checker.guard.check(raw.seq, raw)
        if seeds:
            log.info(
                "line %s: duplicate check seeded with %d telegram(s) acknowledged before this "
                "controller connected (seq %d..%d)",
                self.line,
                len(seeds),
                seeds[0].seq,
                seeds[-1].seq,
            )

    def _adopt(self, h: dict[str, Value]) -> None:
        """First contact: take the PLC's counters as they are. Telegrams above ``TelAck``
        may have reached a controller before this one: they are marked redelivered."""
        self._tel_pos = _u(h, "tel_ack")
        tel_write = _u(h, "tel_write")
        if 0 < u32_diff(tel_write, self._tel_pos) <= self.layout.ring_size:
            self._redeliver_to = tel_write
            log.info(
                "line %s: %d telegram(s) above TelAck %d are read again: a controller before "
                "this one may have journalled them (those are skipped as duplicates)",
                self.line,
                u32_diff(tel_write, self._tel_pos),
                self._tel_pos,
            )
        self._rep_pos = self._rep_ack = _u(h, "rep_ack")
        rep_write = _u(h, "rep_write")
        if 0 <= u32_diff(rep_write, self._rep_ack) <= self.layout.ring_size:
            self._rep_pos = rep_write  # the PLC may still take what a predecessor wrote
        self._written = {
            "tel_ack": _Written(self._tel_pos),
            "rep_write": _Written(rep_write),
        }

    async def _continue(self, h: dict[str, Value]) -> None:
        """After a reconnect to the same PLC run: rewrite an acknowledgement that was lost and
        every reply above ``RepAck`` still held, then ``RepWrite`` (section 6). The telegrams
        that came meanwhile are read first: a held reply whose tracking id has been requested
        again since (its next lap) is rewritten void, with tracking id 0 (section 4.2)."""
        assert self._tel_pos is not None
        assert self._rep_pos is not None
        tel_ack, rep_write, rep_ack = _u(h, "tel_ack"), _u(h, "rep_write"), _u(h, "rep_ack")
        if rep_write != self._rep_pos:
            await self._take_telegrams(_u(h, "tel_write"), self.clock.now(), [])
        self._written["tel_ack"] = _Written(tel_ack)
        self._written["rep_write"] = _Written(rep_write)
        index_writes: list[tuple[Key, Value]] = []
        slot_writes: list[tuple[Key, Value]] = []
        acked = self._acked()
        if acked != tel_ack:
            index_writes.append((header("tel_ack"), acked))  # our ack write was lost
        if rep_write != self._rep_pos:
            for position, (values, request) in sorted(
                self._unacked.items(), key=lambda item: u32_diff(item[0], rep_ack)
            ):
                if u32_diff(position, rep_ack) <= 0:
                    continue
                if self._requests.get(values[1]) != request:
                    self.replies_superseded += 1
                    log.warning(
                        "line %s: reply for tracking id %d voided in the ring: its tracking id "
                        "was requested again while the link was down",
                        self.line,
                        values[1],
                    )
                    values = (position, 0, values[2], values[3])
                slot_writes += self._reply_slot(position, values)
            index_writes.append((header("rep_write"), self._rep_pos))
        self._forget_acked(rep_ack)
        self._rep_ack = rep_ack
        if slot_writes:
            await self._write(slot_writes)
        if index_writes:
            await self._write(index_writes)

    def _restart_evidence(self, h: dict[str, Value]) -> tuple[str, bool] | None:
        """Why the PLC must have restarted since this side last looked, and whether that is
        certain (its own counters went back) or could be one stale read (a counter this side
        owns shows a value it never wrote); None while the counters are consistent."""
        if self._tel_pos is None or self._rep_pos is None:
            return None  # nothing done yet that a restart could invalidate
        tel_write, tel_ack = _u(h, "tel_write"), _u(h, "tel_ack")
        rep_write, rep_ack = _u(h, "rep_write"), _u(h, "rep_ack")
        if u32_diff(tel_write, self._tel_pos) < 0:
            return f"TelWrite {tel_write} is behind the {self._tel_pos} already read", True
        if u32_diff(rep_ack, self._rep_ack) < 0:
            return f"RepAck went back from {self._rep_ack} to {rep_ack}", True
        if not 0 <= u32_diff(self._rep_pos, rep_ack) <= self.layout.ring_size:
            return f"RepAck {rep_ack} is not within one ring below RepWrite {self._rep_pos}", True
        for name, shown in (("tel_ack", tel_ack), ("rep_write", rep_write)):
            written = self._written.get(name)
            if written is not None and not written.shows(shown):
                label = {"tel_ack": "TelAck", "rep_write": "RepWrite"}[name]
                return f"{label} is {shown}, this controller wrote {written.confirmed}", False
        return None

    async def _follow_restart(self, h: dict[str, Value], reason: str) -> None:
        """The PLC restarted: follow its counters on both rings, start a new numbering and
        drop every reply decided before (none may reach the new ring), then say so once."""
        n = self.layout.ring_size
        tel_write, tel_ack = _u(h, "tel_write"), _u(h, "tel_ack")
        rep_write, rep_ack = _u(h, "rep_write"), _u(h, "rep_ack")
        self._forget_acked(self._rep_ack)  # taken by the PLC before it restarted
        self._taken.clear()  # those positions are gone: their acknowledgements change nothing
        self._redeliver_to = None
        self._grace_until = time.monotonic() + self.timing.heartbeat_timeout_s
        dropped = len(self._pending) + len(self._unacked)
        self._pending.clear()
        self._unacked.clear()
        self.replies_dropped += dropped
        self._epoch += 1
        self.restarts += 1
        self.checker.guard.reset()
        self.mapper.reset()
        if self._sample is not None:
            self.mapper.sample(*self._sample)  # this header's tick is already the new run's
        self._written = {"tel_ack": _Written(tel_ack), "rep_write": _Written(rep_write)}
        index_writes: list[tuple[Key, Value]] = []
        self._tel_pos = tel_ack
        if not 0 <= u32_diff(tel_write, tel_ack) <= n:  # nothing there can be read in order
            self._tel_pos = tel_write
            index_writes.append((header("tel_ack"), tel_write))
        self._rep_pos = self._rep_ack = rep_ack  # nothing above the PLC's RepAck is ours
        if rep_write != rep_ack:
            index_writes.append((header("rep_write"), rep_ack))
        raw_flags = PlcFlags(_u(h, "plc_flags") & sum(PlcFlags))
        self._masked_flags = raw_flags & PlcFlags.REPLY_ERROR  # errors of the old ring
        message = (
            f"PLC restart detected ({reason}): both rings follow the PLC's counters "
            f"(TelWrite {tel_write}, TelAck {self._tel_pos}, RepAck {rep_ack}); "
            f"{dropped} reply(ies) decided before it and not seen taken dropped, none replayed "
            "onto new parcels"
        )
        log.warning("line %s: %s", self.line, message)
        if self.alarms is not None:  # one record of the event, then its end: nothing waits
            source = f"{self.line}/plc-restart"
            self.alarms.alarm(source, message, active=True)
            self.alarms.alarm(source, "rings resynchronised to the restarted PLC", active=False)
        if index_writes:
            await self._write(index_writes)

    async def _run_cycles(self) -> None:
        """Full cycles at the poll interval or when the PLC signals; in between, replies are
        written as soon as they are handed over, without reading the header first."""
        next_poll = 0.0
        while not self._closing:  # also ends the loop if a library swallowed our cancellation
            now = time.monotonic()
            if not self._wake.is_set():
                timeout = max(0.0, min(next_poll, self._next_heartbeat) - now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # wait_for can eat a cancel
                        await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            if self._signalled or now >= next_poll:
                self._signalled = False
                next_poll = now + self.timing.poll_s
                await self._cycle()
            else:
                await self._write_replies([])

    def _signal(self) -> None:
        """The transport saw new telegrams (a subscription notification)."""
        self._signalled = True
        self._wake.set()

    async def _cycle(self) -> None:
        h, prefetched = await self._read_header(lanes=time.monotonic() >= self._next_lanes)
        received = self.clock.now()
        owner = _u(h, "ctl_owner")
        if owner != self.owner_id:
            if owner != 0:
                raise PlcOwnedError(
                    f"controller {owner} took the PLC over (this controller, "
                    f"{self.owner_id}, had let its heartbeat stall)"
                )
            await self._claim(h)  # a cold start cleared it
        restart = self._restart_evidence(h)
        if restart is not None:
            reason, certain = restart
            if not certain and not self._suspect:
                self._suspect, self._suspect_at = reason, time.monotonic()
                log.info("line %s: %s; reading the header again", self.line, reason)
                return  # and write nothing until a later read confirms it
            if not certain and time.monotonic() - self._suspect_at < _RECHECK_S:
                return
            await self._follow_restart(h, reason)
            prefetched = []  # read by the old position
        self._suspect = ""
        self._observe(h)
        self._rep_ack = _u(h, "rep_ack")
        if await self._take_telegrams(_u(h, "tel_write"), received, prefetched):
            await asyncio.sleep(0)  # a reply or an acknowledgement ready at once rides along
        await self._write_replies([])

    async def _write_replies(self, index_writes: list[tuple[Key, Value]]) -> None:
        """Write waiting replies into free slots (by the last ``rep_ack`` read), then the
        indexes (``TelAck`` when more telegrams were acknowledged) and the heartbeat in one
        request after the slots. Nothing while a restart is suspected: an index written then
        could expose the restarted PLC's old slots."""
        if self._suspect:
            return
        ack = self._ack_due()
        if ack is not None:
            index_writes.append((header("tel_ack"), ack))
        slot_writes = self._place_replies(self._rep_ack)
        if slot_writes:
            await self._write(slot_writes)
            assert self._rep_pos is not None
            index_writes.append((header("rep_write"), self._rep_pos))
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.timing.heartbeat_period_s
            if not self._heartbeat_held:
                self._ctl_heartbeat = (self._ctl_heartbeat + 1) & 0xFFFF
                index_writes.append((header("ctl_heartbeat"), self._ctl_heartbeat))
        if index_writes:
            await self._write(index_writes)

    async def _write(self, items: Sequence[tuple[Key, Value]]) -> None:
        """Write, keeping track of what the PLC may show for this side's counters."""
        counters = [
            (name, value)
            for (area, _, name), value in items
            if area == "header" and name in self._written and isinstance(value, int)
        ]
        for name, value in counters:
            self._written[name].in_flight = value
        await self.transport.write(items)
        for name, value in counters:
            self._written[name] = _Written(value)

    # --- the telegram ring -------------------------------------------------------------------

    async def _take_telegrams(
        self, tel_write: int, received: float, prefetched: list[Value]
    ) -> bool:
        assert self._tel_pos is not None
        n = self.layout.ring_size
        waiting = u32_diff(tel_write, self._tel_pos)
        if waiting == 0:
            return False
        if waiting < 0:
            raise LinkDownError(
                f"PLC telegram writer index went back from {self._tel_pos} to {tel_write}"
            )
        if waiting > n:
            lost = waiting - n
            message = f"PLC overwrote {lost} unacknowledged telegram slot(s)"
            log.error("line %s: %s", self.line, message)
            if self.alarms is not None:
                self.alarms.alarm(f"{self.line}/telegrams-lost", message, active=True)
            self._tel_pos = u32_add(tel_write, -n)
        positions = [
            u32_add(self._tel_pos, k + 1) for k in range(u32_diff(tel_write, self._tel_pos))
        ]
        width = len(self.layout.telegram_keys(0))
        while positions and len(prefetched) >= width:
            values, prefetched = prefetched[:width], prefetched[width:]
            seq = values[0]
            last = self.checker.guard.last
            if not isinstance(seq, int) or (last is not None and u32_diff(seq, last) <= 0):
                break  # maybe read before the PLC wrote it: read it again below
            self._take(positions.pop(0), values, received)
        step = self.timing.slots_per_read
        for start in range(0, len(positions), step):
            chunk = positions[start : start + step]
            keys = [k for p in chunk for k in self.layout.telegram_keys(self.layout.slot(p))]
            values = await self.transport.read(keys)
            for i, position in enumerate(chunk):
                self._take(position, values[i * width : (i + 1) * width], received)
        self._tel_pos = tel_write
        self._drop_acked()
        return True

    def _take(self, position: int, values: list[Value], received: float) -> None:
        """Deliver the slot read at ``position`` and keep it until it is acknowledged (one
        not delivered, a duplicate or of unknown kind, counts as acknowledged)."""
        telegram = self._deliver(values, received)
        if telegram is not None and self._redeliver_to is not None:
            if u32_diff(position, self._redeliver_to) <= 0:
                telegram = telegram._replace(redelivered=True)
            else:
                self._redeliver_to = None
        self._taken.append(_Taken(position, telegram, telegram is None))
        if telegram is not None:
            self._queue.put_nowait(telegram)

    def _acked(self) -> int:
        """The ``TelAck`` to show: the position before the first telegram not acknowledged."""
        assert self._tel_pos is not None
        return u32_add(self._taken[0].position, -1) if self._taken else self._tel_pos

    def _ack_due(self) -> int | None:
        """The ``TelAck`` to write, or None when the PLC already has it."""
        if self._tel_pos is None:
            return None
        acked = self._acked()
        written = self._written.get("tel_ack")
        return None if written is not None and written.confirmed == acked else acked

    def _drop_acked(self) -> bool:
        """Forget the acknowledged telegrams at the head; whether ``TelAck`` moved."""
        taken = self._taken
        if not taken or not taken[0].acked:
            return False
        while taken and taken[0].acked:
            taken.popleft()
        return True

    def _deliver(self, values: list[Value], received: float) -> Telegram | None:
        """The telegram in a slot's ``values``, checked; None when it is not delivered."""
        raw = _raw_telegram(values)
        scan_time = received
        if raw.kind == TelegramKind.DESTINATION_REQUEST:
            scan_time = self.mapper.to_controller(raw.scan_ms, received)
        telegram = self.checker.admit(raw, scan_time)
        if isinstance(telegram, DestinationRequest):
            requests = self._requests
            requests[telegram.tracking_id] = (self._epoch, telegram.seq, received)
            requests.move_to_end(telegram.tracking_id)
            forget_before = received - _REQUESTS_KEPT_S
            while next(iter(requests.values()))[2] < forget_before:
                requests.popitem(last=False)
        return telegram

    # --- the reply ring ----------------------------------------------------------------------

    def _place_replies(self, rep_ack: int) -> list[tuple[Key, Value]]:
        assert self._rep_pos is not None
        self._forget_acked(rep_ack)
        free = self.layout.ring_size - u32_diff(self._rep_pos, rep_ack)
        writes: list[tuple[Key, Value]] = []
        while free > 0 and self._pending:
            reply, request = self._pending.popleft()
            if self._requests.get(reply.tracking_id) != request:
                self._superseded(reply)
                continue
            self._rep_pos = u32_add(self._rep_pos, 1)
            values = (self._rep_pos, reply.tracking_id, reply.lane, int(reply.reason))
            self._unacked[self._rep_pos] = (values, request)
            writes += self._reply_slot(self._rep_pos, values)
            free -= 1
        return writes

    def _superseded(self, reply: DestinationReply) -> None:
        """A newer request for the reply's tracking id came (its next lap): written now, the
        reply could steer that lap, so it is dropped (docs/plc-interface.md, section 4.2)."""
        self.replies_superseded += 1
        log.warning(
            "line %s: reply for tracking id %d (lane %d) dropped unwritten: a newer request "
            "for that tracking id has come since it was decided",
            self.line,
            reply.tracking_id,
            reply.lane,
        )

    def _reply_slot(
        self, position: int, values: tuple[int, int, int, int]
    ) -> list[tuple[Key, Value]]:
        keys = self.layout.reply_keys(self.layout.slot(position))
        return list(zip(keys, values, strict=True))

    def _forget_acked(self, rep_ack: int) -> None:
        for position in [p for p in self._unacked if u32_diff(p, rep_ack) <= 0]:
            del self._unacked[position]

    # --- header: heartbeat, flags, line state, lanes -----------------------------------------

    def _observe(self, h: dict[str, Value]) -> None:
        now = time.monotonic()
        beat = _u(h, "plc_heartbeat")
        if beat != self._plc_heartbeat:
            self._plc_heartbeat = beat
            self._plc_heartbeat_at = now
            if not self.plc_heartbeat_ok and self.alarms is not None:
                self.alarms.alarm(
                    f"{self.line}/plc-heartbeat", "PLC heartbeat running", active=False
                )
            self.plc_heartbeat_ok = True
        elif (
            self.plc_heartbeat_ok and now - self._plc_heartbeat_at > self.timing.heartbeat_timeout_s
        ):
            self.plc_heartbeat_ok = False
            message = (
                f"PLC heartbeat stalled at {beat} for more than "
                f"{self.timing.heartbeat_timeout_s} s: the PLC program may have stopped"
            )
            log.warning("line %s: %s", self.line, message)
            if self.alarms is not None:
                self.alarms.alarm(f"{self.line}/plc-heartbeat", message, active=True)
        try:
            state = PackMLState(_u(h, "line_state"))
        except ValueError:
            state = PackMLState.UNDEFINED
        if state is not self.line_state:
            self._line_state_changed(self.line_state, state)
        raw_flags = PlcFlags(_u(h, "plc_flags") & sum(PlcFlags))
        self._masked_flags &= raw_flags  # a masked bit that dropped counts again when it sets
        flags = self.plc_flags = raw_flags & ~self._masked_flags
        if now < self._grace_until and not self._alarmed_flags & PlcFlags.SAFE_STATE:
            flags &= ~PlcFlags.SAFE_STATE  # as expected at connect, until it sees our heartbeat
        changed = flags ^ self._alarmed_flags
        self._alarmed_flags = flags
        for flag, (name, message) in _FLAG_ALARMS.items():
            if changed & flag and self.alarms is not None:
                active = bool(flags & flag)
                if active:
                    text = message
                elif flag & self._masked_flags:
                    text = f"cleared by the resync after a PLC restart (still latched): {message}"
                else:
                    text = f"cleared: {message}"
                self.alarms.alarm(f"{self.line}/{name}", text, active=active)
        if "lane.0.id" not in h:
            return
        lanes: dict[int, LaneStatus] = {}
        bad: dict[int, int] = {}
        for j in range(self.layout.lane_slots):
            lane, status = _u(h, f"lane.{j}.id", raw=True), _u(h, f"lane.{j}.status", raw=True)
            if lane == 0:
                continue
            try:
                lanes[lane] = LaneStatus(status)
            except ValueError:
                lanes[lane] = LaneStatus.BLOCKED
                bad[lane] = status
        self._lanes = lanes
        self._report_bad_lanes(bad)

    def _line_state_changed(self, previous: PackMLState | None, state: PackMLState) -> None:
        """Log every PackML state change; Held and Aborted raise an alarm while they last."""
        self.line_state = state
        was = previous.name if previous is not None else "not read yet"
        level = logging.WARNING if state in _STATE_ALARMS else logging.INFO
        log.log(level, "line %s: PLC line state %s (was %s)", self.line, state.name, was)
        if self.alarms is None:
            return
        for alarmed, (name, message) in _STATE_ALARMS.items():
            if state is alarmed:
                self.alarms.alarm(f"{self.line}/{name}", message, active=True)
            elif previous is alarmed:
                text = f"cleared: the PLC left {alarmed.name} for {state.name}"
                self.alarms.alarm(f"{self.line}/{name}", text, active=False)

    def _report_bad_lanes(self, bad: dict[int, int]) -> None:
        """Log a lane status word outside 0..2 once when it appears (it counts as blocked)
        and once, with how many reads showed it, when it goes: not on every read (20 a second)."""
        for lane, word in bad.items():
            seen = self._bad_lanes.get(lane)
            if seen is not None and seen[0] == word:
                self._bad_lanes[lane] = (word, seen[1] + 1)
                continue
            if seen is not None:
                self._bad_lane_gone(lane, *seen)
            log.error(
                "line %s: lane %d status word is %d, expected 0..2; treating it as blocked "
                "(logged once: the count follows when it changes)",
                self.line,
                lane,
                word,
            )
            self._bad_lanes[lane] = (word, 1)
        for lane in [lane for lane in self._bad_lanes if lane not in bad]:
            self._bad_lane_gone(lane, *self._bad_lanes[lane])

    def _bad_lane_gone(self, lane: int, word: int, reads: int) -> None:
        del self._bad_lanes[lane]
        log.warning(
            "line %s: lane %d status word %d (treated as blocked) was read %d time(s); now %s",
            self.line,
            lane,
            word,
            reads,
            self._lanes[lane].name.lower() if lane in self._lanes else "gone from the table",
        )


def _raw_telegram(values: list[Value]) -> RawTelegram:
    """A telegram slot's ``values`` as the PLC wrote them."""
    seq, kind, tracking_id, scan_ms, lane, status, barcode = values
    assert isinstance(barcode, bytes)
    return RawTelegram(
        _int(seq), _int(kind), _int(tracking_id), _int(scan_ms), _int(lane), _int(status), barcode
    )


def _u(h: dict[str, Value], name: str, raw: bool = False) -> int:
    value = h[name if raw else f"header.0.{name}"]
    return _int(value)


def _int(value: Value) -> int:
    if not isinstance(value, int):
        raise LinkDownError(f"PLC returned {value!r} where a number was expected")
    return value
