"""The virtual plant: the twin in scaled real time, playing the PLC side of each line.

:class:`VirtualPlant` steps the SimPy environment from an asyncio task, paced by the same
:class:`controller.core.clock.Clock` the controller runs on (a ``ScaledClock`` for N× real time),
so the controller and its adapters run unchanged and unaware. It touches each sorter line only
through :class:`plc_adapters.plant_side.PlantSide`: the in-process sorter, or the OPC UA and
Modbus PLC emulations that serve the real wire protocols.

SimPy's own real-time environment sleeps with a blocking call and must never run inside the
event loop; here every wait is an ``await``. Plant events fire at most one tick late
(``tick_s`` wall seconds, i.e. ``tick_s × speed`` simulated seconds).
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.core.clock import Clock
from controller.risk.book import RiskBook
from plc_adapters.plant_side import PlantSide
from simulation.adapters import InspectionSink, PlantSideLink, TwinReview, TwinXray
from simulation.plant import RECORD_FIELDS, Plant
from simulation.run import CountingEnvironment, stop_time_s
from simulation.scenario import ScenarioBundle

_CONTRABAND = RECORD_FIELDS.index("contraband")
_STATE = RECORD_FIELDS.index("state")


class VirtualPlant:
    """The plant of ``bundle`` behind ``sides`` (one PlantSide per line).

    ``xray`` and ``review`` are the scanner and the review room as controller ports; pass
    ``book`` to have manifests published into the controller's risk book as parcels arrive.
    """

    def __init__(
        self,
        bundle: ScenarioBundle,
        sides: Mapping[str, PlantSide],
        clock: Clock,
        inspection_sink: InspectionSink,
        book: RiskBook | None = None,
    ) -> None:
        missing = [line.id for line in bundle.site.lines if line.id not in sides]
        if missing:
            raise ValueError(f"no PlantSide for line(s): {', '.join(missing)}")
        self.bundle = bundle
        self.clock = clock
        self.env = CountingEnvironment(initial_time=clock.now())
        self.link = PlantSideLink(sides, inspection_sink, book)
        self.plant = Plant(self.env, bundle.scenario, bundle.site, self.link)
        self.xray = TwinXray(self.plant, clock, bundle.scenario.detector.model_version)
        self.review = TwinReview(self.plant)
        self.lag_max_s = 0.0

    @property
    def inducted(self) -> int:
        """Parcels put on the lines so far (for live views)."""
        return len(self.plant.records) + len(self.plant.on_plant)

    @property
    def threats_inducted(self) -> int:
        closed = sum(1 for r in self.plant.records if r[_CONTRABAND])
        return closed + sum(1 for i in self.plant.on_plant.values() if i.spec.contraband)

    @property
    def threats_released(self) -> int:
        return sum(1 for r in self.plant.records if r[_CONTRABAND] and r[_STATE] == "released")

    async def run(self, tick_s: float = 0.005, until_s: float | None = None) -> None:
        """Run until every parcel is closed or ``until_s`` simulated seconds have passed
        (default: the scenario's horizon plus drain). Cancellable at any await."""
        env, clock = self.env, self.clock
        start = env.now
        stop = start + (stop_time_s(self.bundle) if until_s is None else until_s)
        self.plant.start()
        speed = float(getattr(clock, "speed", 1.0))
        while not self.plant.done.triggered:
            due = env.peek()
            if due > stop:
                break
            now = clock.now()
            if due > now:
                await clock.sleep_until(min(due, now + tick_s * speed))
                continue
            self.lag_max_s = max(self.lag_max_s, now - due)
            env.step()
