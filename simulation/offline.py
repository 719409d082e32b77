"""The full controller core in simulated time: SimPy and the asyncio loop on one clock.

The real :class:`controller.core.Controller` runs against the twin's adapters; the driver
alternates between the SimPy environment and the event loop. After every SimPy event it lets
the loop run until no callback is ready, so everything the controller does in reaction
happens at the same simulated instant; then it processes the next SimPy event. Timers the
controller sets through :class:`SimClock` are SimPy events themselves, so there is one
time line and no busy polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import simpy

from controller.core.clock import SettlingLoop, settle
from controller.core.ports import Journal
from controller.lines import Controller
from controller.risk.book import RiskBook
from plc_adapters.inprocess import InProcessSorter
from simulation.adapters import (
    InspectionStations,
    PlantSideLink,
    RecordingJournal,
    TwinReview,
    TwinXray,
)
from simulation.plant import Plant
from simulation.run import CountingEnvironment, Progress, TwinRun, stop_time_s
from simulation.scenario import ScenarioBundle


class SimClock:
    """Implements :class:`controller.core.clock.Clock` on a SimPy environment's time.

    ``sleep_until`` schedules a SimPy timeout that wakes the sleeper; a cancelled sleeper
    leaves a harmless timeout behind.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env

    def now(self) -> float:
        return float(self.env.now)

    async def sleep_until(self, when: float) -> None:
        delay = when - self.env.now
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_: simpy.Event) -> None:
            if not future.done():
                future.set_result(None)

        self.env.timeout(delay).callbacks.append(wake)
        await future

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        return self._timeout_at(when)

    @asynccontextmanager
    async def _timeout_at(self, when: float) -> AsyncIterator[None]:
        async with asyncio.timeout(None) as scope:
            loop = asyncio.get_running_loop()
            live = [True]

            def expire(_: simpy.Event | None = None) -> None:
                if live[0]:
                    scope.reschedule(loop.time())

            if when <= self.env.now:
                expire()
            else:
                self.env.timeout(when - self.env.now).callbacks.append(expire)
            try:
                yield
            finally:
                live[0] = False


async def step_until(
    env: simpy.Environment,
    done: simpy.Event,
    stop_s: float,
    on_slice: Callable[[], None] | None = None,
    slice_s: float = 900.0,
) -> None:
    """Process SimPy events, settling the loop after each, until ``done`` or ``stop_s``."""
    next_report = env.now + slice_s
    while not done.triggered:
        await settle()
        if env.peek() > stop_s:
            break
        env.step()
        if on_slice is not None and env.now >= next_report:
            on_slice()
            next_report = env.now + slice_s
    await settle()


def build_coupled(
    bundle: ScenarioBundle,
    env: simpy.Environment,
    clock: Any,
    journal: Journal,
) -> tuple[Plant, Controller, dict[str, InProcessSorter]]:
    """The plant, the real controller and the in-process sorters between them."""
    site, scenario = bundle.site, bundle.scenario
    sorters = {line.id: InProcessSorter(line.id) for line in site.lines}
    book = RiskBook()
    stations = InspectionStations()
    link = PlantSideLink(sorters, stations, book)
    plant = Plant(env, scenario, site, link)
    controller = Controller(
        site,
        sorters,
        book,
        TwinXray(plant, clock, scenario.detector.model_version),
        journal,
        clock,
        review=TwinReview(plant),
    )
    stations.commands = controller
    return plant, controller, sorters


def run_full(
    bundle: ScenarioBundle, progress: Progress | None = None, keep_journal: bool = True
) -> TwinRun:
    """Run the scenario through the real asyncio controller core and return the run."""
    with asyncio.Runner(loop_factory=SettlingLoop) as runner:
        return runner.run(run_full_async(bundle, progress, keep_journal))


async def run_full_async(
    bundle: ScenarioBundle,
    progress: Progress | None = None,
    keep_journal: bool = True,
    journal: RecordingJournal | None = None,
) -> TwinRun:
    started = time.perf_counter()
    env = CountingEnvironment()
    clock = SimClock(env)
    journal = journal or RecordingJournal(keep=keep_journal)
    plant, controller, sorters = build_coupled(bundle, env, clock, journal)
    plant.start()
    serving = asyncio.create_task(controller.run())

    def report() -> None:
        controller.kpis.tick(env.now)
        if progress is not None:
            progress(env.now, len(plant.records), plant.generated)

    await step_until(env, plant.done, stop_time_s(bundle), report)
    for sorter in sorters.values():
        sorter.close()
    await finish(env, serving)
    return TwinRun(
        bundle,
        plant,
        "full",
        time.perf_counter() - started,
        env.processed,
        controller.kpis.snapshot(env.now),
        journal.entries,
    )


async def finish(env: simpy.Environment, task: asyncio.Task[None]) -> None:
    """Let the controller drain: decisions still waiting on simulated time need SimPy to
    go on until they return (the plant has stopped feeding by now)."""
    while not task.done():
        await settle()
        if task.done() or env.peek() == float("inf"):
            break
        env.step()
    await asyncio.wait_for(task, timeout=30)
