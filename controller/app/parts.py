"""The parts of a site and how they are built: every adapter through the adapter registry.

:func:`assemble` knows the order parts depend on each other (the plant's clock before
anything that reads time, the journal before the alarms, intake before the X-ray port that
awaits its images, the ports before the controller) and nothing about any adapter: each one is
built by the factory its registration names (:mod:`controller.app.registry`). Nothing here
does I/O; :class:`controller.app.services.Services` starts and stops what this builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

from pydantic import BaseModel

from controller.alarms import Alarms
from controller.app.registry import Kind, Registry, resolve
from controller.app.site import SiteConfig
from controller.console.images import ImageShelf
from controller.core.clock import Clock, MonotonicClock
from controller.core.domain import XrayResult
from controller.core.holds import Holds
from controller.core.ports import ImageSource, ReviewQueue, ScanImage, SorterPort, XrayPort
from controller.events.mqtt import MqttPublisher
from controller.lines import Controller
from controller.risk.book import RiskBook
from controller.risk.feeds import RiskFeed
from controller.store.forwarder import JournalForwarder
from controller.store.journal import SqliteJournal

INTAKE_BUILDER = "controller.intake.factory:build_intake"
"""Builds the ``intake`` section (matcher, sources, report writer); resolved lazily like an
adapter factory, because it loads numpy, pydicom and pynetdicom."""

DEFAULT_POLL_S = 5.0
"""How often a risk feed whose settings have no ``poll_s`` is fetched."""

ResultListener = Callable[[ScanImage, XrayResult], None]


class Plant(Protocol):
    """What plays the hub around the controller: the digital twin on a demo or a rig,
    :class:`RealWorld` on a site (the plant section's factory builds it)."""

    @property
    def clock(self) -> Clock:
        """The clock the whole site runs on (the twin's runs N× faster than the wall)."""
        ...

    def connect(self, parts: Parts) -> None:
        """Hook into the built site (inspection results, scanner images); may raise
        :class:`controller.core.settings.ConfigError` naming what the site lacks."""
        ...

    async def play(self, duration_s: float | None, stop: asyncio.Event) -> None:
        """Play for ``duration_s`` wall seconds (None: as long as the plant goes). Return when
        the plant has ended its sorters' telegram streams (the lines then drain), or set
        ``stop`` to stop the site at once."""
        ...

    def counts(self) -> Mapping[str, int]:
        """Live figures for the view (parcels inducted, threats ...); empty if none."""
        ...


class RealWorld:
    """A real site: the PLCs and scanners are out there, time is the monotonic clock, and a
    ``duration_s`` is a timer that stops the site."""

    def __init__(self) -> None:
        self._clock = MonotonicClock()

    @property
    def clock(self) -> Clock:
        return self._clock

    def connect(self, parts: Parts) -> None:
        """Nothing to hook into: the floor talks through the adapters."""

    async def play(self, duration_s: float | None, stop: asyncio.Event) -> None:
        if duration_s is None:
            await asyncio.Event().wait()  # the floor never ends; cancelled at stop
            return
        await asyncio.sleep(duration_s)
        stop.set()

    def counts(self) -> Mapping[str, int]:
        return {}


@dataclass(frozen=True)
class PlantContext:
    """What the plant's factory gets: it builds the site's clock itself."""

    site: SiteConfig
    book: RiskBook
    where: str = "plant"


@dataclass(frozen=True)
class BuildContext:
    """What an adapter factory may read (each reads only what it needs).

    ``where`` is the adapter's path in the site file (for errors), ``line`` the line a
    sorter serves.
    """

    site: SiteConfig
    clock: Clock
    alarms: Alarms
    book: RiskBook
    plant: Plant
    images: ImageSource | None = None
    result_listeners: tuple[ResultListener, ...] = ()
    where: str = ""
    line: str = ""

    @property
    def policy_classes(self) -> list[str]:
        return list(self.site.policy.classes)

    def at(self, where: str, line: str = "") -> BuildContext:
        return replace(self, where=where, line=line)


class Matcher(ImageSource, Protocol):
    """The intake matcher as the services see it: an image source with a background task."""

    async def run(self) -> None: ...


class Runner(Protocol):
    """A part with a background task (an intake source: a folder poller, a DICOM server)."""

    async def run(self) -> None: ...


class IntakeParts(Protocol):
    """What :data:`INTAKE_BUILDER` returns (see :class:`controller.intake.factory.IntakeParts`)."""

    @property
    def matcher(self) -> Matcher: ...

    @property
    def sources(self) -> Mapping[str, Runner]: ...

    @property
    def reports(self) -> ResultListener | None: ...


@dataclass
class Parts:
    """Everything one site is made of, built and wired, not yet started."""

    config: SiteConfig
    registry: Registry
    plant: Plant
    clock: Clock
    book: RiskBook
    holds: Holds
    journal: SqliteJournal
    alarms: Alarms
    forwarder: JournalForwarder | None
    intake: IntakeParts | None
    xray: XrayPort
    review: ReviewQueue | None
    sorters: dict[str, SorterPort]
    feeds: list[tuple[RiskFeed, float]]
    controller: Controller
    images: ImageShelf | None = None
    """The latest scanner images, for the console's review station."""
    events: MqttPublisher | None = None
    """Publishes the journal, lane states and KPIs to the site's MQTT broker."""
    named: list[tuple[str, object]] = field(default_factory=list)
    """Every adapter with its name, in start order (stopped in reverse)."""


def build_plant(config: SiteConfig, registry: Registry, book: RiskBook) -> Plant:
    """The plant section's plant, or :class:`RealWorld` when the site has none."""
    if config.plant is None:
        return RealWorld()
    product = registry.build(Kind.PLANT, config.plant, PlantContext(config, book))
    return cast(Plant, product)


def assemble(config: SiteConfig, registry: Registry) -> Parts:
    """Build every part of ``config`` in dependency order (see the module docstring)."""
    book = RiskBook(config.risk_book.max_results)
    plant = build_plant(config, registry, book)  # first: it may render images for seconds
    clock = plant.clock
    journal = SqliteJournal(config.store.journal_path, config.site.id, config.store.group_commit_ms)
    alarms = Alarms(journal, clock.now)
    book.alarms = alarms  # conflicting risk results are raised on the site's board
    forwarder = (
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
    events = (
        MqttPublisher(
            config.events,
            config.site.id,
            config.store.journal_path,
            {line.id: {lane.id: str(lane.kind) for lane in line.lanes} for line in config.lines},
        )
        if config.events
        else None
    )
    images = ImageShelf() if config.console.enabled else None
    ctx = BuildContext(config, clock, alarms, book, plant)
    if images is not None:
        ctx = replace(ctx, result_listeners=(images,))
    intake = _intake(config, registry, ctx)
    named: list[tuple[str, object]] = []
    if intake is not None:
        ctx = replace(ctx, images=intake.matcher)
        if intake.reports is not None:
            ctx = replace(ctx, result_listeners=(*ctx.result_listeners, intake.reports))
        named += [(f"intake {name}", source) for name, source in intake.sources.items()]
    xray = cast(XrayPort, registry.build(Kind.XRAY, config.xray, ctx.at("xray")))
    review = cast(ReviewQueue | None, registry.build(Kind.REVIEW, config.review, ctx.at("review")))
    sorters = {
        line.id: cast(
            SorterPort,
            registry.build(Kind.SORTER, line.sorter, ctx.at(f"lines.{i}.sorter", line.id)),
        )
        for i, line in enumerate(config.lines)
    }
    feeds = [
        (
            cast(RiskFeed, registry.build(Kind.RISK_FEED, settings, ctx.at(f"risk_feeds.{i}"))),
            _poll_s(settings),
        )
        for i, settings in enumerate(config.risk_feeds)
    ]
    named += [("xray", xray), ("review", review)]
    named += [(f"{line} sorter", sorter) for line, sorter in sorters.items()]
    named += [(f"risk feed {i}", feed) for i, (feed, _) in enumerate(feeds)]
    named.append(("plant", plant))
    holds = Holds()
    controller = Controller(
        config, sorters, book, xray, journal, clock, review=review, holds=holds, alarms=alarms
    )
    parts = Parts(
        config=config,
        registry=registry,
        plant=plant,
        clock=clock,
        book=book,
        holds=holds,
        journal=journal,
        alarms=alarms,
        forwarder=forwarder,
        intake=intake,
        xray=xray,
        review=review,
        sorters=sorters,
        feeds=feeds,
        controller=controller,
        images=images,
        events=events,
        named=_distinct(named),
    )
    plant.connect(parts)
    return parts


def _distinct(named: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Each part once, under its first name (the twin is the plant, the X-ray and the review
    room at once: it starts and stops once)."""
    seen: set[int] = set()
    distinct = []
    for name, part in named:
        if part is not None and id(part) not in seen:
            seen.add(id(part))
            distinct.append((name, part))
    return distinct


def _intake(config: SiteConfig, registry: Registry, ctx: BuildContext) -> IntakeParts | None:
    if config.intake is None:
        return None
    build_intake = resolve(INTAKE_BUILDER)

    def source(settings: BaseModel, source_ctx: object) -> object:
        return registry.build(Kind.IMAGE_SOURCE, settings, source_ctx)

    return cast(
        IntakeParts,
        build_intake(
            config.intake,
            clock=ctx.clock,
            alarms=ctx.alarms,
            alarm_thresholds={n: c.alarm for n, c in config.policy.classes.items()},
            source_factory=source,
        ),
    )


def _poll_s(settings: BaseModel) -> float:
    return float(getattr(settings, "poll_s", DEFAULT_POLL_S))
