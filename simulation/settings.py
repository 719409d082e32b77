"""Site-file settings for running the twin as the plant of a live controller (demos, rigs).

``TwinPlant`` goes in the site file's ``plant`` section (beside the stand-in's settings); the
composition root builds :class:`TwinSitePlant` from it (a drop-in for the stand-in plant), or
calls :func:`virtual_plant_from_settings` for the plant and its in-process sorters alone.
This module imports only pydantic at load time, so ``controller.config`` can import the model
without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

if TYPE_CHECKING:
    from controller.clock import Clock
    from controller.config import SiteConfig
    from controller.core import Controller
    from controller.domain import InspectionOutcome, ReviewOutcome, XrayResult
    from controller.ports import ReviewRequest
    from controller.risk import RiskBook
    from plc_adapters.inprocess import InProcessSorter
    from simulation.adapters import InspectionSink
    from simulation.scanner import ImageBank, ImagePush
    from simulation.virtual import VirtualPlant


class TwinPlant(BaseModel):
    """The digital twin plays the plant: sorters, scanner, review room and inspection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["twin"] = "twin"
    scenario: Path
    """Scenario file (traffic, staffing, faults); its lines must match this site's."""
    speed: PositiveFloat = 10.0
    """Plant seconds per wall second (the controller's clock runs at the same speed)."""
    tick_s: float = Field(default=0.005, gt=0, le=1)
    """How often, at most, the plant is stepped (wall seconds)."""
    scanner_images: int = Field(default=0, ge=0, le=200)
    """Render this many X-ray images per ground-truth class at start and hand each parcel's
    image to the site's in-process intake source at scan time (for ``xray: {type: onnx}``);
    0: no images (``xray: {type: plant}`` takes the detector model's scores instead)."""


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
    from controller.config import ConfigError
    from plc_adapters.inprocess import InProcessSorter
    from simulation.scenario import ScenarioBundle, cross_check, load_scenario
    from simulation.virtual import VirtualPlant

    bundle = load_scenario(settings.scenario, allow_overload=True)
    problems = cross_check(bundle.scenario, site)
    if problems:
        raise ConfigError(str(settings.scenario), problems)
    bundle = ScenarioBundle(scenario=bundle.scenario, site=site, source=bundle.source)
    sorters = {line.id: InProcessSorter(line.id) for line in site.lines}
    return VirtualPlant(bundle, sorters, clock, inspection_sink, book), sorters


class TwinSitePlant:
    """The twin with the same surface as the demo's stand-in plant, for the composition root:
    ``sorters`` (the controller's sorter ports), ``attach(controller)``, the X-ray and review
    ports (``analyse``, ``review``), live counts, and ``run(duration_s)``, which ends the
    sorters' telegram streams when the plant stops."""

    def __init__(self, settings: TwinPlant, site: SiteConfig, clock: Clock, book: RiskBook):
        self.settings = settings
        self._controller: Controller | None = None
        self.plant, self.sorters = virtual_plant_from_settings(
            settings, site, clock, self._inspected, book
        )

    def attach(self, controller: Controller) -> None:
        """Inspection results go to the controller, as officers' terminals would send them."""
        self._controller = controller

    def _inspected(self, hawb: str, outcome: InspectionOutcome) -> None:
        if self._controller is not None:
            self._controller.record_inspection(hawb, outcome)

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

    async def run(self, duration_s: float | None = None) -> None:
        """Play the plant for ``duration_s`` plant seconds (default: the scenario's horizon
        plus drain), then close every sorter's telegram stream."""
        try:
            await self.plant.run(tick_s=self.settings.tick_s, until_s=duration_s)
        finally:
            for sorter in self.sorters.values():
                sorter.close()
