"""Injected time. The core reads time only through a :class:`Clock`, so tests and the digital
twin run it in simulated time and production runs it on the monotonic clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock; only differences are meaningful."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``; cancellable."""
        ...


class MonotonicClock:
    """Wall time for production: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class ScaledClock:
    """Runs ``speed`` times faster than wall time (demos and the virtual plant)."""

    def __init__(self, speed: float, start: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._start = start
        self._wall0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._wall0) * self.speed

    async def sleep_until(self, when: float) -> None:
        delay = (when - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """Simulated time that moves only when told to; sleepers wake in time order.

    ``advance`` lets woken tasks run before it returns, so a test reads the effects of
    everything due up to the new time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        await future

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes, or None if nobody sleeps (for simulation drivers)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = max(self._now, when)
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Give ready tasks a few turns of the loop (no wall time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
