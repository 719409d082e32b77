"""How the kit plays one rule: the checklist's say, a fresh event loop, a time bound.

Every rule runs on an event loop of its own (``asyncio.Runner``), so a suite never depends on
how the integrator's project configures pytest-asyncio, and a rule cannot leave tasks behind
for the next. The integrator's fixture therefore returns a *kit* (cheap, synchronous); the
kit's ``open()`` builds the adapter on the rule's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

from controller.conformance import checklist
from controller.conformance.rules import Rule

RULE_LIMIT_S = 180.0
"""The most one rule may take, start-up and shut-down included."""
WAIT_S = 30.0
"""The most the kit waits for any one thing; a loaded machine is slow, never this slow."""
MAX_LAG_S = 0.25
"""The longest the event loop may go without running a due timer while an adapter works."""

Scenario = Callable[[], Coroutine[Any, Any, None]]
T = TypeVar("T")


class MissingCapabilityError(AssertionError):
    """The harness lacks what a rule needs; the message says what to add or exempt."""


def play(kit: object, rule: Rule, scenario: Scenario, *, limit_s: float = RULE_LIMIT_S) -> None:
    """Play ``scenario`` for ``rule`` as the kit's checklist says: skip it (exempt), expect
    it to fail (todo), or require it to pass (done, or no checklist)."""
    mark = mark_for(kit, rule)
    if mark.status is checklist.Status.EXEMPT:
        pytest.skip(f"{rule} exempt: {mark.reason}")
    if mark.status is checklist.Status.TODO:
        try:
            run(scenario, rule, limit_s)
        except Exception as exc:  # an assertion or the adapter's own error: not met yet
            pytest.xfail(f"{rule} todo: {mark.reason} (fails with: {_short(exc)})")
        pytest.fail(
            f"{rule} passes, but {checklist_path(kit)} marks it todo: mark it done",
            pytrace=False,
        )
    run(scenario, rule, limit_s)


def mark_for(kit: object, rule: Rule) -> checklist.Mark:
    """What the kit's checklist (its ``checklist`` attribute, a path) says of ``rule``."""
    path = checklist_path(kit)
    if path is None:
        return checklist.DONE
    try:
        return checklist.load(path, rule.port).mark(rule)
    except checklist.ChecklistError as exc:
        pytest.fail(str(exc), pytrace=False)


def checklist_path(kit: object) -> Path | None:
    path = getattr(kit, "checklist", None)
    return None if path is None else Path(path)


def run(scenario: Scenario, rule: Rule, limit_s: float = RULE_LIMIT_S) -> None:
    """Run ``scenario`` on a fresh event loop; a rule over ``limit_s`` fails."""

    async def bounded() -> None:
        timeout = asyncio.timeout(limit_s)
        try:
            async with timeout:
                await scenario()
        except TimeoutError:
            if timeout.expired():
                raise AssertionError(f"{rule} did not finish within {limit_s:g} s") from None
            raise

    with asyncio.Runner() as runner:
        runner.run(bounded())


def missing(harness: object, capability: type, rule: Rule) -> MissingCapabilityError:
    """The failure of ``rule`` when ``harness`` is no ``capability`` (a runtime-checkable
    protocol): what the harness lacks, and that the rule may instead be marked exempt. Use as
    ``if not isinstance(harness, Capability): raise missing(harness, Capability, rule)``."""
    names = set(getattr(capability, "__annotations__", {}))
    names |= {name for name in vars(capability) if not name.startswith("_")}
    absent = sorted(name for name in names if not hasattr(harness, name))
    return MissingCapabilityError(
        f"{rule} needs the harness to provide {capability.__name__} ("
        f"{type(harness).__name__} lacks {', '.join(absent)}): implement it, or mark the rule "
        "exempt in the adapter's checklist with the reason it does not apply"
    )


async def wait_for(condition: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


class LoopLag:
    """Measures how late the event loop runs a short timer while the ``async with`` body
    runs: :attr:`worst` is the longest the loop was kept from it (blocked), in seconds,
    counting a block at the very end of the body too."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.worst = 0.0
        self.ticks = 0
        self._since = 0.0  # when the timer now pending was set
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._since = asyncio.get_running_loop().time()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)  # the first timer is set before the body starts
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._late(asyncio.get_running_loop().time())  # the timer pending now may be overdue
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._since = loop.time()
            await asyncio.sleep(self.period_s)
            self._late(loop.time())
            self.ticks += 1

    def _late(self, now: float) -> None:
        self.worst = max(self.worst, now - self._since - self.period_s)


async def unblocked(
    prepare: Callable[[int], Awaitable[T]],
    work: Callable[[T], Awaitable[None]],
    what: str,
    attempts: int = 2,
) -> None:
    """Run ``work`` on what ``prepare(attempt)`` readies, measuring the event loop's lag, up to
    ``attempts`` times: pass once an attempt keeps the loop waiting less than
    :data:`MAX_LAG_S`. A busy machine may hold a loop up once; an adapter that blocks the loop
    blocks it every time."""
    worst: list[float] = []
    for attempt in range(attempts):
        ready = await prepare(attempt)
        async with LoopLag() as lag:
            await work(ready)
        if lag.worst < MAX_LAG_S:
            return
        worst.append(lag.worst)
    shown = " and ".join(f"{w * 1000:.0f} ms" for w in worst)
    raise AssertionError(
        f"the event loop was blocked for {shown} while {what} (at most "
        f"{MAX_LAG_S * 1000:.0f} ms): do that work on a worker thread"
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
