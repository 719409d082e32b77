"""Matches scanner images to parcels: the :class:`controller.core.ports.ImageSource` the inference
service awaits, fed by every intake adapter.

An image is matched by HAWB, or by tracking id on its source's line. Images that come before
their parcel asks are held for ``hold_s``; a parcel that asks first waits for its image.
An image nobody asks for in time, one that carries no key, and the oldest held image when
more than ``max_held`` are waiting all go to the :class:`Quarantine` on disk and raise an
alarm: no image is ever dropped.

An image that failed at intake (no pixels: oversize, unreadable, a decoder error) is
quarantined at once with its reason and raises the alarm of its :class:`Fault` — once per
condition until acknowledged — and still goes to its parcel, whose X-ray result becomes
``bad_image`` with that reason. It is recorded once: expiry or overflow only forgets it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from controller.core.clock import Clock, MonotonicClock
from controller.core.ports import AlarmSink, ScanImage
from controller.intake.faults import Fault
from controller.intake.quarantine import Quarantine, QuarantinedImage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    image: ScanImage
    line: str | None
    expires_at: float
    recorded: bool = False
    """Already in the quarantine (a failed image): expiry forgets it without a second record."""


@dataclass(frozen=True, slots=True)
class _ToWrite:
    image: ScanImage
    reason: str
    file: Path | None
    fault: Fault | None


@dataclass(slots=True)
class _Waiter:
    line: str
    tracking_id: int
    hawb: str
    future: asyncio.Future[ScanImage]


class ImageMatcher:
    """Pairs images with parcels; run :meth:`run` as a task to quarantine unclaimed images."""

    def __init__(
        self,
        quarantine: Quarantine,
        *,
        clock: Clock | None = None,
        hold_s: float = 30.0,
        max_held: int = 10_000,
        alarms: AlarmSink | None = None,
        name: str = "intake",
    ) -> None:
        if hold_s <= 0 or max_held < 1:
            raise ValueError(f"hold_s must be > 0 and max_held >= 1, got {hold_s}, {max_held}")
        self.quarantine = quarantine
        self.clock: Clock = clock or MonotonicClock()
        self.hold_s = hold_s
        self.max_held = max_held
        self.alarms = alarms
        self.name = name
        self.delivered = 0
        self.matched = 0
        self.quarantined: list[QuarantinedImage] = []
        self._ids = itertools.count()
        self._held: OrderedDict[int, _Held] = OrderedDict()
        self._waiters: list[_Waiter] = []
        self._outbox: asyncio.Queue[_ToWrite] = asyncio.Queue()
        self._written = asyncio.Event()
        self._raised: set[str] = set()

    # --- intake side ---------------------------------------------------------------------

    def deliver(
        self,
        image: ScanImage,
        line: str | None = None,
        *,
        fault: Fault | None = None,
        file: Path | None = None,
    ) -> None:
        """Hand over one image (on the event loop); never blocks, never drops.

        ``fault`` says why an image has no pixels (an image without pixels and without a
        fault counts as unreadable, unless it merely lacks a key); ``file`` is where the
        source moved the original, for the quarantine record.
        """
        self.delivered += 1
        keyless = not image.hawb and image.tracking_id is None
        if fault is None and image.pixels is None and not keyless:
            fault = Fault.UNREADABLE  # e.g. a scanner that pushed None with its reason
        if fault is not None:
            reason = f"{fault.text}: {image.error or 'no detail given'}"
            self._to_quarantine(image, reason + ("; no parcel key" if keyless else ""), file, fault)
            self._alarm(f"{self.name}/{fault}", f"{fault.text}; first: {image.source}")
        elif keyless:
            self._to_quarantine(image, f"no parcel key: {image.error or 'none given'}", file)
        if keyless:
            return
        for waiter in self._waiters:
            if not waiter.future.done() and _matches(image, line, waiter):
                waiter.future.set_result(image)
                self.matched += 1
                return
        expires_at = self.clock.now() + self.hold_s
        self._held[next(self._ids)] = _Held(image, line, expires_at, recorded=fault is not None)
        while len(self._held) > self.max_held:
            _, oldest = self._held.popitem(last=False)
            if not oldest.recorded:
                self._to_quarantine(
                    oldest.image, f"more than max_held={self.max_held} images waited for parcels"
                )

    @property
    def held(self) -> int:
        return len(self._held)

    # --- parcel side (ImageSource) -------------------------------------------------------

    async def image_for(self, line: str, tracking_id: int, hawb: str) -> ScanImage:
        """The parcel's image, now if held, else when it arrives. Cancellable."""
        probe = _Waiter(line, tracking_id, hawb, asyncio.get_running_loop().create_future())
        for ident, held in self._held.items():
            if _matches(held.image, held.line, probe):
                del self._held[ident]
                self.matched += 1
                return held.image
        self._waiters.append(probe)
        try:
            return await probe.future
        finally:
            self._waiters.remove(probe)

    # --- quarantine ----------------------------------------------------------------------

    async def run(self) -> None:
        """Quarantine expired and keyless images until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sweep())
            group.create_task(self._write())

    async def wait_quarantined(self, count: int) -> None:
        """Return once at least ``count`` images have been written to quarantine."""
        while len(self.quarantined) < count:
            self._written.clear()
            await self._written.wait()

    async def _sweep(self) -> None:
        every = min(self.hold_s / 2, 1.0)
        while True:
            await self.clock.sleep_until(self.clock.now() + every)
            now = self.clock.now()
            expired = [i for i, held in self._held.items() if held.expires_at <= now]
            for ident in expired:
                held = self._held.pop(ident)
                if not held.recorded:
                    self._to_quarantine(
                        held.image,
                        f"no parcel asked for this image within hold_s={self.hold_s:g} s",
                    )

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            image = item.image
            try:
                entry = await asyncio.to_thread(
                    self.quarantine.put, image, item.reason, file=item.file
                )
            except OSError as exc:
                log.error("%s: cannot write to quarantine, holding image: %r", self.name, exc)
                self._alarm(f"{self.name}/quarantine", f"quarantine folder unwritable: {exc}")
                await asyncio.sleep(1.0)
                self._outbox.put_nowait(item)
                continue
            self.quarantined.append(entry)
            self._written.set()
            log.warning(
                "%s: image from %s (%s) quarantined as %s: %s",
                self.name,
                image.source,
                image.hawb or f"tid-{image.tracking_id}",
                entry.sidecar.name,
                item.reason,
            )
            if item.fault is None:
                self._alarm(
                    f"{self.name}/quarantine",
                    f"unmatched image(s) in quarantine, first: {entry.sidecar.name}",
                )

    def _to_quarantine(
        self, image: ScanImage, reason: str, file: Path | None = None, fault: Fault | None = None
    ) -> None:
        self._outbox.put_nowait(_ToWrite(image, reason, file, fault))

    def _alarm(self, source: str, message: str) -> None:
        """Raise ``source`` once: later images of the same condition add no alarm traffic."""
        if self.alarms is not None and source not in self._raised:
            self._raised.add(source)
            self.alarms.alarm(source, message, active=True)

    def acknowledge(self) -> None:
        """An operator has seen the quarantine: clear its alarms until the next image."""
        raised, self._raised = self._raised, set()
        if self.alarms is not None:
            for source in sorted(raised | {f"{self.name}/quarantine"}):
                self.alarms.alarm(source, "acknowledged", active=False)


def _matches(image: ScanImage, image_line: str | None, waiter: _Waiter) -> bool:
    if image.hawb:
        return image.hawb == waiter.hawb
    same_line = image_line is None or image_line == waiter.line
    return same_line and image.tracking_id == waiter.tracking_id
