"""Running the twin: the environment, the run's result, and the fast-path runner.

:func:`run_fast` drives the plant with the policy-in-the-loop link as fast as the CPU allows;
:mod:`simulation.offline` runs the full asyncio core instead. Both return a :class:`TwinRun`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import simpy
from simpy.events import NORMAL, EventPriority

from simulation.fast_path import PolicyLink
from simulation.plant import Plant, Sample
from simulation.scenario import ScenarioBundle
from simulation.truth import LineArrivals, ParcelSpec

Progress = Callable[[float, int, int], None]
"""Called with (simulated seconds, parcels closed, parcels generated) as the run goes."""

YOUNG_GC_THRESHOLD = 100_000
"""Allocations between young-generation collections during a fast run (CPython's default is
700). A run makes a handful of objects per parcel that outlive a collection or two (the
parcel's item, record and KPI entries) and no reference cycles to speak of, so at the default
the collector runs about once per 700 parcels, each time walking what is young: a few percent
of a day's run for nothing freed. Restored when the run ends."""


@contextmanager
def _young_collections_every(allocations: int) -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.set_threshold(allocations, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it schedules (for events/s), through
    SimPy's public ``schedule``: one Python call per event, never its private counter."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self.processed = 0

    def schedule(
        self, event: simpy.Event, priority: EventPriority = NORMAL, delay: float = 0
    ) -> None:
        self.processed += 1
        super().schedule(event, priority, delay)


@dataclass
class TwinRun:
    """What one run produced; reports and tests read it."""

    bundle: ScenarioBundle
    plant: Plant
    fidelity: str  # "fast" (policy in the loop) or "full" (asyncio core through the ports)
    wall_s: float
    events: int
    controller_kpis: dict[str, Any]
    journal: list[Any] = field(default_factory=list)

    @property
    def records(self) -> list[tuple[Any, ...]]:
        return self.plant.records

    @property
    def samples(self) -> list[Sample]:
        return self.plant.samples

    @property
    def open_parcels(self) -> int:
        return len(self.plant.on_plant)


def stop_time_s(bundle: ScenarioBundle) -> float:
    """When a run gives up waiting for open parcels: the horizon plus the drain time."""
    s = bundle.scenario
    return (s.horizon_h + s.drain_h) * 3600


def run_fast(
    bundle: ScenarioBundle,
    progress: Progress | None = None,
    arrivals: list[LineArrivals] | None = None,
    specs: dict[str, Iterator[ParcelSpec]] | None = None,
) -> TwinRun:
    """Run the scenario with the real policy in the loop (no asyncio) and return the run.

    ``arrivals`` and ``specs`` replace the generated traffic (a replay)."""
    started = time.perf_counter()
    env = CountingEnvironment()
    link = PolicyLink(bundle.site, bundle.scenario)
    plant = Plant(env, bundle.scenario, bundle.site, link, specs, arrivals)
    plant.start()
    stop = stop_time_s(bundle)
    slice_s = 900.0
    with _young_collections_every(YOUNG_GC_THRESHOLD):
        while not plant.done.triggered and env.now < stop and env.peek() != float("inf"):
            env.run(until=min(env.now + slice_s, stop))
            if progress is not None:
                progress(env.now, len(plant.records), plant.generated)
    snapshot = link.kpis.snapshot(env.now)
    return TwinRun(bundle, plant, "fast", time.perf_counter() - started, env.processed, snapshot)
