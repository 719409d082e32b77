"""The twin as the plant of a live controller: the factories :mod:`simulation.registration`
names, and :class:`TwinSitePlant`, which they build. This module loads SimPy and numpy.

:func:`twin_plant` builds the ``plant`` section (rendering scanner images first, then starting
the scaled clock); :func:`plant_sorter`, :func:`plant_xray` and :func:`plant_review` hand the
twin's in-process sorters, detector and review room to the lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from controller.app.parts import BuildContext, Parts, PlantContext
from controller.app.site import SiteConfig
from controller.core.clock import Clock, ScaledClock
from controller.core.domain import ReviewOutcome, XrayResult
from controller.core.ports import OperatorCommands, ReviewRequest
from controller.core.settings import ConfigError
from controller.risk.book import RiskBook
from plc_adapters.inprocess import InProcessSorter
from simulation.adapters import InspectionSink, InspectionStations
from simulation.scanner import ImageBank, ImagePush
from simulation.scenario import ScenarioBundle, cross_check, load_scenario
from simulation.settings import InProcessSorterSettings, PlantReview, PlantXray, TwinPlant
from simulation.virtual import VirtualPlant


def virtual_plant_from_settings(
    settings: TwinPlant,
    site: SiteConfig,
    clock: Clock,
    inspection_sink: InspectionSink,
    book: RiskBook | None = None,
) -> tuple[VirtualPlant, dict[str, InProcessSorter]]:
    """The virtual plant over one in-process sorter per line of ``site``.

    The site given here replaces the one the scenario names, so the controller and the plant
    share one site. Raises ConfigError (path, value, problem) for a scenario that does not fit.
    """
    bundle = load_scenario(settings.scenario, allow_overload=True)
    problems = cross_check(bundle.scenario, site)
    if problems:
        raise ConfigError(str(settings.scenario), problems)
    bundle = ScenarioBundle(scenario=bundle.scenario, site=site, source=bundle.source)
    # The PLC judges each reply on the live clock as it arrives (the plant's SimPy clock can
    # trail it by a tick): a reply after the parcel's decision point is ignored, as on a wire.
    sorters = {
        line.id: InProcessSorter(
            line.id, clock=clock, decision_window_s=line.belt.decision_window_s
        )
        for line in site.lines
    }
    return VirtualPlant(bundle, sorters, clock, inspection_sink, book), sorters


class TwinSitePlant:
    """The twin as the site's plant (:class:`controller.app.parts.Plant`): its clock, its
    ``sorters`` (the controller's sorter ports), the X-ray and review ports (``analyse``,
    ``review``), live counts; ``connect`` hooks it into the built site and ``play`` runs it.
    ``attach(commands)`` and ``run(plant_s)`` drive it without the services (tests)."""

    def __init__(
        self,
        settings: TwinPlant,
        site: SiteConfig,
        clock: Clock,
        book: RiskBook,
        images: ImageBank | None = None,
    ):
        self.settings = settings
        self._clock = clock
        self.images = images
        self.stations = InspectionStations()
        self.plant, self.sorters = virtual_plant_from_settings(
            settings, site, clock, self.stations, book
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    def attach(self, commands: OperatorCommands) -> None:
        """Officers record inspection results as commands to ``commands`` (the controller),
        as their terminals would."""
        self.stations.commands = commands

    def connect(self, parts: Parts) -> None:
        """Inspection results go to the site's controller; with ``scanner_images``, each
        parcel's image goes to the site's in-process intake source at scan time."""
        self.attach(parts.controller)
        if self.images is not None:
            self.send_images(self.images, _scanner(parts, self.settings))

    def send_images(self, bank: ImageBank, push: ImagePush) -> None:
        """Hand each parcel's image from ``bank`` to ``push`` at scan time."""
        self.plant.link.scanner = lambda item: push(
            bank.image_for(item.spec.contraband), item.spec.hawb, item.tracking_id
        )

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return await self.plant.xray.analyse(line, tracking_id, hawb)

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        return await self.plant.review.review(request)

    @property
    def inducted(self) -> int:
        return self.plant.inducted

    @property
    def threats_inducted(self) -> int:
        return self.plant.threats_inducted

    @property
    def threats_released(self) -> int:
        return self.plant.threats_released

    def counts(self) -> Mapping[str, int]:
        return {
            "inducted": self.inducted,
            "threats_inducted": self.threats_inducted,
            "threats_released": self.threats_released,
        }

    async def play(self, duration_s: float | None, stop: asyncio.Event) -> None:
        """Play ``duration_s`` wall seconds (the scenario's horizon and drain by default);
        the sorters' streams end with it, so the lines drain and the site stops."""
        await self.run(None if duration_s is None else duration_s * self.settings.speed)

    async def run(self, duration_s: float | None = None) -> None:
        """Play the plant for ``duration_s`` plant seconds (default: the scenario's horizon
        plus drain), then close every sorter's telegram stream."""
        try:
            await self.plant.run(tick_s=self.settings.tick_s, until_s=duration_s)
        finally:
            for sorter in self.sorters.values():
                sorter.close()


def _scanner(parts: Parts, settings: TwinPlant) -> ImagePush:
    """The intake source the plant's scanner hands its images to (one that takes pushes)."""
    sources = parts.intake.sources.values() if parts.intake else []
    scanners = [source for source in sources if callable(getattr(source, "push", None))]
    if not scanners:
        raise ConfigError(
            "site",
            [
                (
                    "plant.scanner_images",
                    str(settings.scanner_images),
                    "the plant renders scanner images, but intake has no source of "
                    "type 'inprocess' to receive them",
                )
            ],
        )
    scanner = scanners[0]

    def push(pixels: object, hawb: str, tracking_id: int) -> None:
        scanner.push(pixels, hawb=hawb, tracking_id=tracking_id)  # type: ignore[attr-defined]

    return push


def twin_plant(settings: TwinPlant, ctx: PlantContext) -> TwinSitePlant:
    """Registry factory of ``plant: {type: twin}``. Images are rendered before the scaled
    clock starts: it takes seconds."""
    images = ImageBank(settings.scanner_images) if settings.scanner_images else None
    return TwinSitePlant(settings, ctx.site, ScaledClock(settings.speed), ctx.book, images)


def _twin(ctx: BuildContext, type_key: str, played: str) -> TwinSitePlant:
    if isinstance(ctx.plant, TwinSitePlant):
        return ctx.plant
    raise ConfigError(
        "site",
        [
            (
                f"{ctx.where}.type",
                repr(type_key),
                f"{played} is played by the plant model, but the site has no 'plant' section "
                "of type 'twin'",
            )
        ],
    )


def plant_sorter(settings: InProcessSorterSettings, ctx: BuildContext) -> InProcessSorter:
    """Registry factory of ``sorter: {type: inprocess}``: the twin plays the line's PLC."""
    if not isinstance(ctx.plant, TwinSitePlant):
        raise ConfigError(
            "site",
            [
                (
                    f"{ctx.where}.type",
                    "'inprocess'",
                    "an in-process sorter is played by the plant model, but the site has no "
                    "'plant' section; add one or choose a PLC adapter",
                )
            ],
        )
    return ctx.plant.sorters[ctx.line]


def plant_xray(settings: PlantXray, ctx: BuildContext) -> TwinSitePlant:
    """Registry factory of ``xray: {type: plant}``: the twin's detector model scores."""
    return _twin(ctx, "plant", "an X-ray of type 'plant'")


def plant_review(settings: PlantReview, ctx: BuildContext) -> TwinSitePlant:
    """Registry factory of ``review: {type: plant}``: the twin's officers review."""
    return _twin(ctx, "plant", "a review room of type 'plant'")
