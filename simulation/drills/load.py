"""The drill's scripted load: one line's belt played around its emulated PLC.

:class:`LinePlant` inducts parcels in seeded bursts. For each it does what the belt and the PLC
program do: the destination request at the scan, then at the divert point the lane the PLC
applies (:meth:`plc_adapters.emulator.EmulatedPlc.lane_for`: the credited reply, or its default
lane) and the divert confirmation, round the loop again while the PLC recirculates it. A parcel
the PLC no longer tracks when it reaches its divert (a cold start forgot it) goes to the
default lane unconfirmed, as on the floor. Everything lands in the :class:`Ledger` the outcome
checker reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from controller.core.domain import DivertStatus
from controller.core.settings import Line
from plc_adapters import rulebook
from plc_adapters.emulator import EmulatedPlc
from simulation.drills.outcome import Divert, Ledger, SentParcel

_STEERED = (DivertStatus.DIVERTED, DivertStatus.LANE_FULL, DivertStatus.MISSED)

ScanHook = Callable[[SentParcel], None]


class LinePlant:
    """Plays one line: ``hawbs`` are the barcodes its parcels carry, in induction order."""

    def __init__(
        self,
        line: Line,
        plc: EmulatedPlc,
        ledger: Ledger,
        hawbs: Sequence[str],
        rng: random.Random,
    ) -> None:
        self.line = line
        self.plc = plc
        self.ledger = ledger
        self.hawbs = hawbs
        self.rng = rng
        self.next_tracking_id = 1
        """The tracking id the next parcel gets (a cold-started PLC numbers from 1 again)."""
        self.on_scan: ScanHook | None = None
        """Called at each parcel's first scan (a scanner pushing the parcel's image)."""
        self.travel_s = line.belt.scan_to_divert_m / line.belt.speed_m_s
        self._inducted = 0
        self._carried: set[asyncio.Task[None]] = set()

    @property
    def inducted(self) -> int:
        return self._inducted

    def next_parcel(self, barcode: str | None = None, malformed: bool = False) -> SentParcel:
        """The next parcel onto the belt: the next HAWB of the plan unless ``barcode`` is given."""
        if barcode is None:
            barcode = self.hawbs[self._inducted % len(self.hawbs)]
        self._inducted += 1
        tracking_id, self.next_tracking_id = self.next_tracking_id, self.next_tracking_id + 1
        return self.ledger.add(self.line.id, tracking_id, barcode, malformed)

    async def burst(self, count: int, per_s: float) -> None:
        """Induct ``count`` parcels at ``per_s`` on average (seeded gaps); return once every
        one of them has left the belt."""
        tasks = []
        for i in range(count):
            if i:
                await asyncio.sleep(self.rng.expovariate(per_s))
            tasks.append(self.send(self.next_parcel()))
        await asyncio.gather(*tasks)

    def send(self, parcel: SentParcel) -> asyncio.Task[None]:
        """Put ``parcel`` on the belt now; the task ends when it leaves the belt."""
        task = asyncio.create_task(self._carry(parcel), name=f"drill parcel {parcel}")
        self._carried.add(task)
        task.add_done_callback(self._carried.discard)
        return task

    async def drain(self) -> None:
        """Wait until every parcel sent so far has left the belt."""
        while self._carried:
            await asyncio.gather(*self._carried)

    def cancel(self) -> None:
        """Take every parcel off the belt (the drill is over)."""
        for task in list(self._carried):
            task.cancel()

    async def _carry(self, parcel: SentParcel) -> None:
        plc, clock = self.plc, self.plc.clock
        first = True
        while True:
            scanned, run = clock.now(), plc.cold_starts
            parcel.seqs.append(plc.request(parcel.tracking_id, parcel.barcode, scanned))
            parcel.requests += 1
            if first and self.on_scan is not None:
                self.on_scan(parcel)
            first = False
            await clock.sleep_until(scanned + self.travel_s)
            tracked = plc.tracked.get(parcel.tracking_id)
            if tracked is None or plc.cold_starts != run:
                # the PLC forgot it (a new parcel may carry its id by now): default lane, and
                # nothing to confirm
                parcel.diverts.append(Divert(plc.default_lane, None))
                return
            reply = tracked.reply
            lane, status = plc.lane_for(parcel.tracking_id)
            steered = reply is not None and lane == reply.lane and status in _STEERED
            parcel.diverts.append(Divert(lane, status, reply if steered else None))
            plc.confirm(parcel.tracking_id, lane, status)
            if not rulebook.recirculates(status):
                return
            await clock.sleep_until(clock.now() + self.line.belt.loop_s)
