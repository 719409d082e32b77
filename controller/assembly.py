"""The composition root: builds the adapters a site file names and runs them in one task group.

This is the only place that knows which adapter implements which port. Adding an adapter
means adding its settings model in :mod:`controller.config` and one branch in a factory here;
the core is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from controller.alarms import Alarms
from controller.clock import Clock, MonotonicClock, ScaledClock
from controller.config import ConfigError, SiteConfig
from controller.core import Controller
from controller.domain import XrayResult, XrayStatus
from controller.inference.settings import build_onnx_xray
from controller.intake.inprocess import InProcessScanner
from controller.intake.settings import build_intake
from controller.ports import ReviewQueue, SorterPort, XrayPort
from controller.recovery import open_parcels
from controller.risk import RiskBook, feed_from_settings
from controller.store.forwarder import ForwarderStatus, JournalForwarder
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries
from plc_adapters.settings import build_wire_sorter
from simulation.scanner import ImageBank
from simulation.settings import TwinSitePlant

if TYPE_CHECKING:
    from controller.inference.service import OnnxXrayService
    from plc_adapters.wire_sorter import WireSorter
    from simulation.scanner import ImagePush

log = logging.getLogger(__name__)


class NoImages:
    """The X-ray port when no scanner is configured: every parcel lacks an image."""

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult.fault(XrayStatus.MISSING, "no X-ray source configured")


@dataclass
class Snapshot:
    """What the live view shows, taken once per refresh."""

    clock_s: float
    kpis: dict[str, object]
    open_parcels: int
    risk_results: int
    journal_rows: int
    journal_commits: int
    forwarder: ForwarderStatus | None
    plant: dict[str, int] = field(default_factory=dict)


Reporter = Callable[[Snapshot], None]


class Site:
    """Every part of one site, wired from its config; ``run`` serves until stopped."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        images = (  # rendered before the plant clock starts: it takes seconds
            ImageBank(config.plant.scanner_images)
            if config.plant and config.plant.scanner_images
            else None
        )
        self.clock: Clock = ScaledClock(config.plant.speed) if config.plant else MonotonicClock()
        self.book = RiskBook()
        self.journal = SqliteJournal(
            config.store.journal_path, config.site.id, config.store.group_commit_ms
        )
        self.forwarder = (
            JournalForwarder(
                config.store.journal_path,
                config.store.central_url,
                config.site.id,
                config.store.forward_interval_s,
                config.store.forward_batch,
            )
            if config.store.central_url
            else None
        )
        self.plant = (
            TwinSitePlant(config.plant, config, self.clock, self.book) if config.plant else None
        )
        self.alarms = Alarms(self.journal, self.clock.now)
        self.intake = (
            build_intake(
                config.intake,
                clock=self.clock,
                alarms=self.alarms,
                alarm_thresholds={n: c.alarm for n, c in config.policy.classes.items()},
            )
            if config.intake
            else None
        )
        self.inference: OnnxXrayService | None = None
        self._wires: list[WireSorter] = []
        self.controller = Controller(
            config,
            self._sorters(),
            self.book,
            self._xray(),
            self.journal,
            self.clock,
            review=self._review(),
        )
        if self.plant is not None:
            self.plant.attach(self.controller)
            if images is not None:
                self.plant.send_images(images, self._plant_scanner())

    def _plant_scanner(self) -> ImagePush:
        """The intake source the plant's scanner hands its images to."""
        scanners = [
            source
            for source in (self.intake.sources.values() if self.intake else [])
            if isinstance(source, InProcessScanner)
        ]
        if not scanners:
            raise ConfigError(
                "site",
                [
                    (
                        "plant.scanner_images",
                        str(self.config.plant.scanner_images if self.config.plant else 0),
                        "the plant renders scanner images, but intake has no source of "
                        "type 'inprocess' to receive them",
                    )
                ],
            )
        scanner = scanners[0]

        def push(pixels: object, hawb: str, tracking_id: int) -> None:
            scanner.push(pixels, hawb=hawb, tracking_id=tracking_id)

        return push

    def _sorters(self) -> dict[str, SorterPort]:
        sorters: dict[str, SorterPort] = {}
        for i, line in enumerate(self.config.lines):
            if line.sorter.type == "inprocess":
                if self.plant is None:
                    raise ConfigError(
                        "site",
                        [
                            (
                                f"lines.{i}.sorter.type",
                                "'inprocess'",
                                "an in-process sorter is played by the plant model, but the "
                                "site has no 'plant' section; add one or choose a PLC adapter",
                            )
                        ],
                    )
                sorters[line.id] = self.plant.sorters[line.id]
            else:
                self._wires.append(build_wire_sorter(line.id, line.sorter, self.clock, self.alarms))
                sorters[line.id] = self._wires[-1]
        return sorters

    def _xray(self) -> XrayPort:
        settings = self.config.xray
        if settings.type == "onnx":
            assert self.intake is not None  # guaranteed by SiteConfig validation
            self.inference = build_onnx_xray(
                settings,
                self.intake.matcher,
                policy_classes=list(self.config.policy.classes),
                alarms=self.alarms,
                clock=self.clock,
            )
            if self.intake.reports is not None:
                self.inference.listeners.append(self.intake.reports)
            return self.inference
        if settings.type == "plant" and self.plant is not None:
            return self.plant
        return NoImages()

    def _review(self) -> ReviewQueue | None:
        if self.config.review.type == "plant" and self.plant is not None:
            return self.plant
        return None

    def snapshot(self) -> Snapshot:
        now = self.clock.now()
        plant = {}
        if self.plant is not None:
            plant = {
                "inducted": self.plant.inducted,
                "threats_inducted": self.plant.threats_inducted,
                "threats_released": self.plant.threats_released,
            }
        return Snapshot(
            clock_s=now,
            kpis=self.controller.kpis.snapshot(now),
            open_parcels=self.controller.open_parcels(),
            risk_results=len(self.book),
            journal_rows=self.journal.rows_written,
            journal_commits=self.journal.commits,
            forwarder=self.forwarder.status if self.forwarder else None,
            plant=plant,
        )

    async def run(
        self,
        duration_s: float | None = None,
        stop: asyncio.Event | None = None,
        report: Reporter | None = None,
        report_every_s: float = 1.0,
    ) -> Snapshot:
        """Serve until ``stop`` is set, or until the plant stand-in has run ``duration_s``
        wall seconds and every parcel it inducted is closed. Returns the final snapshot."""
        stop = stop or asyncio.Event()
        async with self.journal, contextlib.AsyncExitStack() as stack:
            if self.inference is not None:
                await stack.enter_async_context(self.inference)  # load, check, warm up
            await self.recover()
            feeds = [feed_from_settings(f) for f in self.config.risk_feeds]
            if feeds:
                problems = await self.book.refresh_once(feeds)  # load before the first scan
                log.info(
                    "risk feeds: %d results loaded, %d problems", len(self.book), len(problems)
                )
            async with asyncio.TaskGroup() as group:
                background = []
                if feeds:
                    poll = min(f.poll_s for f in self.config.risk_feeds)
                    background.append(group.create_task(self.book.run(feeds, poll)))
                if self.forwarder is not None:
                    background.append(group.create_task(self.forwarder.run()))
                if report is not None:
                    background.append(group.create_task(self._report(report, report_every_s)))
                if self.intake is not None:
                    background.append(group.create_task(self.intake.matcher.run()))
                    for source in self.intake.sources.values():
                        background.append(group.create_task(source.run()))
                serving = group.create_task(self.controller.run())
                main = [serving]
                if self.plant is not None:
                    plant_s = None if duration_s is None else duration_s * self._speed()
                    main.append(group.create_task(self.plant.run(plant_s)))
                elif duration_s is not None:
                    group.create_task(_set_after(stop, duration_s))
                stopper = group.create_task(stop.wait())
                await asyncio.wait([*main, stopper], return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    for task in main:
                        task.cancel()
                else:
                    await asyncio.gather(*main)
                stopper.cancel()
                for task in background:
                    task.cancel()
            for wire in self._wires:
                await wire.aclose()
            if self.forwarder is not None:
                await self._ship_tail(self.forwarder)
        final = self.snapshot()
        if report is not None:
            report(final)
        return final

    async def recover(self) -> None:
        """Take back the parcels the journal shows open (a restart loses none)."""
        wall_now = datetime.now(UTC)
        since = wall_now - timedelta(hours=self.config.store.recovery_horizon_h)
        rows = await asyncio.to_thread(
            read_entries, self.journal.url, self.config.site.id, since=since
        )
        parcels = open_parcels(rows, self.clock.now(), wall_now)
        for line_id, line in self.controller.lines.items():
            line.restore([p for p in parcels if p.line == line_id])
        if parcels:
            log.info("recovered %d open parcel(s) from the journal", len(parcels))

    @staticmethod
    async def _ship_tail(forwarder: JournalForwarder, limit_s: float = 10.0) -> None:
        """Ship what the central database still lacks, for at most ``limit_s``; the rest
        stays in the local journal and goes on the next start."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while await forwarder.forward_once() > 0:
                    pass
        await forwarder.close()

    def _speed(self) -> float:
        return self.clock.speed if isinstance(self.clock, ScaledClock) else 1.0

    async def _report(self, report: Reporter, every_s: float) -> None:
        while True:
            report(self.snapshot())
            await asyncio.sleep(every_s)


async def _set_after(event: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    event.set()
