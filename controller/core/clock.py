"""Injected time. The core reads time only through a :class:`Clock`, so tests and the digital
twin run it in simulated time and production runs it on the monotonic clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import Context
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock; only differences are meaningful."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``; cancellable."""
        ...

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout_at`` on this clock: the block is cancelled at ``when`` and
        ``TimeoutError`` raised. Cheap: no task is created."""
        ...


class MonotonicClock:
    """Wall time for production: ``time.monotonic`` and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        loop_time = asyncio.get_running_loop().time()
        return asyncio.timeout_at(loop_time + (when - self.now()))


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

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        loop_time = asyncio.get_running_loop().time()
        return asyncio.timeout_at(loop_time + (when - self.now()) / self.speed)


@dataclass(order=True, slots=True)
class _Timer:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class ManualClock:
    """Simulated time that moves only when told to; timers fire in time order.

    ``advance`` lets woken tasks run before it returns, so a test reads the effects of
    everything due up to the new time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[_Timer] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_at(when, lambda: _wake(future))
        try:
            await future
        finally:
            timer.cancelled = True

    @asynccontextmanager
    async def _timeout_at(self, when: float) -> AsyncIterator[None]:
        async with asyncio.timeout(None) as scope:
            loop = asyncio.get_running_loop()
            timer = self.call_at(when, lambda: scope.reschedule(loop.time()))
            if when <= self._now:
                scope.reschedule(loop.time())
            try:
                yield
            finally:
                timer.cancelled = True

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        return self._timeout_at(when)

    def next_due(self) -> float | None:
        """When the earliest live timer fires, or None (for simulation drivers)."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].when if self._timers else None

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        await settle()
        while (due := self.next_due()) is not None and due <= when:
            timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            timer.cancelled = True
            timer.callback()
            await settle()
        self._now = max(self._now, when)
        await settle()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SettlingLoop(asyncio.SelectorEventLoop):
    """An event loop that knows when it is idle: nothing ready to run and no timer due.

    Simulated time (:class:`ManualClock`, the twin's full fidelity) moves on only once
    everything the last event set off has run. This loop counts the callbacks handed to its
    public ``call_soon`` and ``call_at`` that have not run yet, so :func:`settle` waits for
    exactly that: no fixed number of turns, no reading of the loop's private queues.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting = 0
        self._timers: set[asyncio.TimerHandle] = set()

    def call_soon(
        self, callback: Callable[..., object], *args: object, context: Context | None = None
    ) -> asyncio.Handle:
        self._waiting += 1
        return super().call_soon(self._run, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: object,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        timers = self._timers
        handle: list[asyncio.TimerHandle] = []

        def fire(*fired_args: object) -> None:
            timers.discard(handle[0])
            callback(*fired_args)

        timer = super().call_at(when, fire, *args, context=context)
        handle.append(timer)
        timers.add(timer)
        return timer

    def _run(self, callback: Callable[..., object], *args: object) -> None:
        self._waiting -= 1
        callback(*args)

    def idle(self) -> bool:
        """True when no callback waits to run and no live timer is due (the caller's own
        turn excepted: it is running now)."""
        if self._waiting:
            return False
        now = self.time()
        for timer in [t for t in self._timers if t.cancelled()]:
            self._timers.discard(timer)
        return not any(timer.when() <= now for timer in self._timers)


async def settle() -> None:
    """Let the loop run everything that is ready, and what that makes ready, before returning;
    no simulated time passes. Needs a :class:`SettlingLoop`."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, SettlingLoop):
        raise RuntimeError(
            "simulated time needs a SettlingLoop: asyncio.Runner(loop_factory=SettlingLoop)"
        )
    await asyncio.sleep(0)
    while not loop.idle():  # noqa: ASYNC110 (the loop is the event: it counts what is left)
        await asyncio.sleep(0)  # one turn; the loop says when nothing is left
