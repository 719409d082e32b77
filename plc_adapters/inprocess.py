"""The sorter contract played inside one process: no wire, same semantics.

The controller holds the :class:`controller.core.ports.SorterPort` side; the plant side (the demo's
stand-in plant, the digital twin, tests) pushes destination requests and divert confirmations
and receives replies. Sequence numbers are assigned here as a PLC would, and a telegram
is delivered exactly once, in order. Telegrams pass the same checks as over a wire
(:class:`plc_adapters.telegrams.TelegramChecker`), so :meth:`InProcessSorter.inject` can play
duplicates and malformed telegrams for the adapter contract tests.

There is no PLC program here. Given a ``clock`` and the line's ``decision_window_s``, the
sorter applies the PLC's reply rule from :mod:`plc_adapters.rulebook` (a reply counts only if
it arrives by the parcel's decision point) before handing a reply to the plant; without them it
hands over every reply and the plant applies the rulebook itself on its own clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Mapping

from controller.core.clock import Clock
from controller.core.domain import DestinationReply, DivertStatus, LaneStatus, Telegram
from controller.core.link import LinkState
from controller.core.ports import AlarmSink
from controller.core.views import SorterHealth
from plc_adapters import rulebook
from plc_adapters.layout import TelegramKind
from plc_adapters.plant_side import ReplyHandler
from plc_adapters.telegrams import RawTelegram, TelegramChecker


class InProcessSorter:
    """One sorter line. ``on_reply`` is called for every reply the sorter credits (every reply
    unless ``clock`` and ``decision_window_s`` are given), on the event loop; without a
    handler, credited replies are kept in ``replies``."""

    def __init__(
        self,
        line: str,
        on_reply: ReplyHandler | None = None,
        alarms: AlarmSink | None = None,
        *,
        clock: Clock | None = None,
        decision_window_s: float | None = None,
    ) -> None:
        if (clock is None) != (decision_window_s is None):
            raise ValueError("give both clock and decision_window_s, or neither")
        self.line = line
        self.on_reply = on_reply
        self.checker = TelegramChecker(line, alarms)
        self.replies: list[DestinationReply] = []
        self.replies_ignored = 0
        """Replies not credited: late, or for a parcel never requested."""
        self.acknowledged = 0
        """Telegrams the controller said were durable (:meth:`acknowledge`)."""
        self.clock = clock
        self.decision_window_s = decision_window_s
        self._deadlines: dict[int, float] = {}  # tracking id -> decision point (with a clock)
        self._queue: asyncio.Queue[Telegram | None] = asyncio.Queue()
        self._seq = itertools.count(1)
        self._lanes: dict[int, LaneStatus] = {}

    # --- controller side (SorterPort) ----------------------------------------------------

    async def telegrams(self) -> AsyncIterator[Telegram]:
        while (telegram := await self._queue.get()) is not None:
            yield telegram

    async def reply(self, reply: DestinationReply) -> None:
        if self.clock is not None:
            deadline = self._deadlines.get(reply.tracking_id, math.nan)
            if not rulebook.reply_credited(self.clock.now(), deadline):
                self.replies_ignored += 1  # as a PLC would: ignored, the default lane stands
                return
        if self.on_reply is not None:
            self.on_reply(reply)
        else:
            self.replies.append(reply)

    def acknowledge(self, telegram: Telegram) -> None:
        """Counted only: in one process no telegram outlives the controller that took it, so
        none is ever offered again."""
        self.acknowledged += 1

    def lane_status(self) -> Mapping[int, LaneStatus]:
        return self._lanes

    def health(self) -> SorterHealth:
        """In one process there is no link to lose and no heartbeat to watch."""
        return SorterHealth(LinkState.UP, "execute")

    # --- plant side ----------------------------------------------------------------------

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        """A parcel left the scan tunnel; returns the telegram's sequence number."""
        seq = next(self._seq)
        if self.decision_window_s is not None:
            deadlines = self._deadlines
            deadlines.pop(tracking_id, None)  # keep insertion order = scan order
            deadlines[tracking_id] = rulebook.decision_point(scan_time, self.decision_window_s)
            if len(deadlines) > 100_000:
                del deadlines[next(iter(deadlines))]
        encoded = barcode.encode("utf-8")  # non-ASCII is flagged, as on a wire
        kind = TelegramKind.DESTINATION_REQUEST
        self.inject(RawTelegram(seq, kind, tracking_id, barcode=encoded), scan_time)
        return seq

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        seq = next(self._seq)
        kind = TelegramKind.DIVERT_CONFIRMATION
        self.inject(RawTelegram(seq, kind, tracking_id, lane=lane, status=status))
        return seq

    def next_seq(self) -> int:
        """Draw the next telegram sequence number (for a telegram built by hand)."""
        return next(self._seq)

    def inject(self, raw: RawTelegram, scan_time: float = 0.0) -> None:
        """Deliver a telegram exactly as given, through the same checks as a wire adapter's
        (duplicates dropped, malformed values reported); no sequence number is drawn."""
        telegram = self.checker.admit(raw, scan_time)
        if telegram is not None:
            self._queue.put_nowait(telegram)

    def set_lane_status(self, lane: int, status: LaneStatus) -> None:
        self._lanes[lane] = status

    def close(self) -> None:
        """End the telegram stream (the controller's line task then returns)."""
        self._queue.put_nowait(None)
