"""Small in-process port implementations for driving the core in simulated time.

They stand in only for what has no real implementation here yet or would make simulated-time
tests depend on thread timing; the real journal, risk feeds and sorters have their own tests.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from controller.app.site import SiteConfig, parse_config
from controller.core.clock import ManualClock
from controller.core.domain import JournalEntry, ReviewOutcome, RiskResult, XrayResult, XrayStatus
from controller.core.ports import ReviewRequest

CLEAN = {
    "firearm": 0.01,
    "blade": 0.01,
    "lithium_battery": 0.01,
    "liquid_container": 0.01,
    "narcotics_organic": 0.01,
}


def site(**overrides: object) -> SiteConfig:
    raw: dict[str, object] = {
        "site": {"id": "TEST"},
        "lines": [
            {
                "id": "L1",
                "belt": {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5},
                "lap_limit": 2,
                "lanes": [
                    {"id": 1, "kind": "release"},
                    {"id": 2, "kind": "inspection"},
                    {"id": 3, "kind": "inspection"},
                    {"id": 9, "kind": "exception"},
                ],
            }
        ],
        "policy": {"audit_rate": 0.0, "min_audit_rate": 0.0},
    }
    raw.update(overrides)
    return parse_config(raw)


class MemoryJournal:
    """Keeps entries in a list; can be told to fail, to test the fail-secure path."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self.fail: Exception | None = None

    async def write(self, entries: list[JournalEntry]) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.entries.extend(entries)

    def for_parcel(self, tracking_id: int) -> list[JournalEntry]:
        return [e for e in self.entries if e.tracking_id == tracking_id]


@dataclass
class DictRisk:
    results: dict[str, RiskResult] = field(default_factory=dict)

    async def lookup(self, hawb: str) -> RiskResult | None:
        return self.results.get(hawb)


@dataclass
class ScriptedXray:
    """Returns scripted results per HAWB after ``delay_s`` on the injected clock."""

    clock: ManualClock
    results: dict[str, XrayResult] = field(default_factory=dict)
    delay_s: float = 0.2
    calls: int = 0

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        self.calls += 1
        await self.clock.sleep_until(self.clock.now() + self.delay_s)
        return self.results.get(hawb, XrayResult(XrayStatus.OK, CLEAN, "test-model"))


@dataclass
class ScriptedReview:
    """An officer who answers ``outcomes[hawb]`` after ``delay_s``; records every request."""

    clock: ManualClock
    outcomes: Mapping[str, ReviewOutcome] = field(default_factory=dict)
    delay_s: float = 1.0
    requests: list[ReviewRequest] = field(default_factory=list)

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        self.requests.append(request)
        await self.clock.sleep_until(self.clock.now() + self.delay_s)
        return self.outcomes.get(request.hawb, ReviewOutcome.INSPECT)


async def max_loop_lag(work: Callable[[], Awaitable[object]], tick_s: float = 0.005) -> float:
    """Run ``work`` while a ticker measures how late the event loop wakes it (seconds).

    The cyclic garbage collector is paused meanwhile: a full collection stalls every thread
    for tens of milliseconds whatever the journal does, and is not what is measured here.
    """
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(tick_s)
            worst = max(worst, time.perf_counter() - before - tick_s)

    gc_was_enabled = gc.isenabled()
    gc.disable()
    task = asyncio.create_task(ticker())
    try:
        await work()
    finally:
        done.set()
        await task
        if gc_was_enabled:
            gc.enable()
    return worst
