"""The X-ray port's suite: scores, faults as results, cancellation at the deadline, answers kept
apart under concurrency, and an event loop that never blocks.

Each test plays one rule against the adapter the integrator's fixture ``cargogate_xray`` builds
(:class:`~controller.conformance.harness.XrayKit`); the harness readies each parcel's case
(:class:`~controller.conformance.harness.XrayCase`). ``analyse`` must never raise: a fault is
a result with a status and a reason (``controller.core.ports.XrayPort``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from controller.alarms import Alarms
from controller.conformance.harness import Parcel, XrayCase, XrayContext, XrayHarness, XrayKit
from controller.conformance.rules import (
    XRAY_BAD_IMAGE,
    XRAY_CANCEL,
    XRAY_CONCURRENT,
    XRAY_MISSING_IMAGE,
    XRAY_NO_BLOCKING,
    XRAY_SCORES,
    Rule,
    covers,
)
from controller.conformance.running import WAIT_S, MissingCapabilityError, play, unblocked
from controller.core.domain import XrayResult, XrayStatus

CANCEL_AFTER_S = 0.5
"""When the kit cancels a slow analysis, as the core does when a parcel's deadline passes."""
CANCELLED_WITHIN_S = 1.0
"""How soon a cancelled analysis must have ended."""
CONCURRENT = 8
HEAVY = 4


class Bench:
    def __init__(self, harness: XrayHarness, rule: Rule) -> None:
        self.harness = harness
        self.xray = harness.xray
        self.rule = rule

    async def parcel(self, case: XrayCase, index: int = 0) -> Parcel:
        try:
            return await self.harness.parcel(case, index)
        except NotImplementedError as exc:
            raise MissingCapabilityError(
                f"{self.rule} needs a {case.value} parcel, which the harness cannot ready "
                f"({exc or 'NotImplementedError'}): implement it, or mark the rule exempt in "
                "the adapter's checklist with the reason it does not apply"
            ) from None

    async def analyse(self, parcel: Parcel, limit_s: float = WAIT_S) -> XrayResult:
        result = await asyncio.wait_for(
            self.xray.analyse(parcel.line, parcel.tracking_id, parcel.hawb), limit_s
        )
        assert isinstance(result, XrayResult), f"analyse() returned {result!r}, not an XrayResult"
        return result


def _play(kit: XrayKit, rule: Rule, folder: Path, body: Callable[[Bench], Awaitable[None]]) -> None:
    async def scenario() -> None:
        ctx = XrayContext(Alarms(None, time.monotonic), folder)
        async with kit.open(ctx) as harness:
            await body(Bench(harness, rule))

    play(kit, rule, scenario)


def _check_scores(result: XrayResult) -> None:
    assert result.status is XrayStatus.OK, f"a readable image was not scored: {result!r}"
    assert result.scores, "an ok result without scores"
    for name, value in result.scores.items():
        assert isinstance(name, str), f"class name {name!r}"
        assert name, "a class without a name"
        assert isinstance(value, float), f"score {name} = {value!r} is not a float"
        assert math.isfinite(value), f"score {name} = {value}"
        assert 0.0 <= value <= 1.0, f"score {name} = {value} not in [0, 1]"
    assert result.model_version, "an ok result names the model version that scored it"


# --- the rules -------------------------------------------------------------------------------


@covers(XRAY_SCORES)
def test_a_readable_image_is_scored(cargogate_xray: XrayKit, tmp_path: Path) -> None:
    _play(cargogate_xray, XRAY_SCORES, tmp_path, _scores)


async def _scores(bench: Bench) -> None:
    _check_scores(await bench.analyse(await bench.parcel(XrayCase.SCORABLE)))


@covers(XRAY_BAD_IMAGE)
def test_an_unreadable_image_is_a_bad_image_result(cargogate_xray: XrayKit, tmp_path: Path) -> None:
    _play(cargogate_xray, XRAY_BAD_IMAGE, tmp_path, _bad_image)


async def _bad_image(bench: Bench) -> None:
    result = await bench.analyse(await bench.parcel(XrayCase.UNREADABLE))
    assert result.status is XrayStatus.BAD_IMAGE, f"an unreadable image gave {result!r}"
    assert result.detail, "a bad_image result says why"
    assert not result.scores, "a bad image has no scores"


@covers(XRAY_MISSING_IMAGE)
def test_no_image_is_a_missing_result(cargogate_xray: XrayKit, tmp_path: Path) -> None:
    _play(cargogate_xray, XRAY_MISSING_IMAGE, tmp_path, _missing_image)


async def _missing_image(bench: Bench) -> None:
    result = await bench.analyse(await bench.parcel(XrayCase.NO_IMAGE))
    assert result.status is XrayStatus.MISSING, f"a parcel without an image gave {result!r}"
    assert result.detail, "a missing result says why"
    assert not result.scores, "a missing image has no scores"


@covers(XRAY_CANCEL)
def test_cancellation_at_the_deadline_ends_the_analysis(
    cargogate_xray: XrayKit, tmp_path: Path
) -> None:
    _play(cargogate_xray, XRAY_CANCEL, tmp_path, _cancel)


async def _cancel(bench: Bench) -> None:
    slow = await bench.parcel(XrayCase.SLOW)
    task = asyncio.create_task(bench.xray.analyse(slow.line, slow.tracking_id, slow.hawb))
    await asyncio.sleep(CANCEL_AFTER_S)
    assert not task.done(), (
        f"the slow parcel was answered within {CANCEL_AFTER_S} s "
        f"({task.result() if not task.exception() else task.exception()!r}): ready a slower one"
    )
    cancelled_at = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCELLED_WITHIN_S)
    assert task in done, f"analyse() ran on {CANCELLED_WITHIN_S} s after its cancellation"
    if not task.cancelled():
        outcome = task.exception() or task.result()
        raise AssertionError(f"analyse() swallowed its cancellation and gave {outcome!r}")
    took = time.monotonic() - cancelled_at
    assert took < CANCELLED_WITHIN_S, f"analyse() took {took:.2f} s to end once cancelled"
    _check_scores(await bench.analyse(await bench.parcel(XrayCase.SCORABLE, 1)))


@covers(XRAY_CONCURRENT)
def test_parcels_analysed_together_keep_their_own_answers(
    cargogate_xray: XrayKit, tmp_path: Path
) -> None:
    _play(cargogate_xray, XRAY_CONCURRENT, tmp_path, _concurrent)


async def _concurrent(bench: Bench) -> None:
    alone = []
    for index in range(CONCURRENT):
        alone.append(await bench.analyse(await bench.parcel(XrayCase.SCORABLE, index)))
    for result in alone:
        _check_scores(result)
    distinct = {tuple(sorted(r.scores.items())) for r in alone}
    assert len(distinct) > 1, (
        f"all {CONCURRENT} scorable parcels scored alike: ready different images per index, "
        "so that a swapped answer shows"
    )
    parcels = [await bench.parcel(XrayCase.SCORABLE, index) for index in range(CONCURRENT)]
    together = await asyncio.gather(*(bench.analyse(parcel) for parcel in parcels))
    for index, (one, many) in enumerate(zip(alone, together, strict=True)):
        _check_scores(many)
        assert list(many.scores) == list(one.scores), f"parcel {index}: other classes together"
        for name, value in one.scores.items():
            assert abs(many.scores[name] - value) <= 1e-4, (
                f"parcel {index}: {name} scored {value} alone, {many.scores[name]} together"
            )


@covers(XRAY_NO_BLOCKING)
def test_analyses_never_block_the_event_loop(cargogate_xray: XrayKit, tmp_path: Path) -> None:
    _play(cargogate_xray, XRAY_NO_BLOCKING, tmp_path, _no_blocking)


async def _no_blocking(bench: Bench) -> None:
    async def ready(attempt: int) -> list[Parcel]:
        first = attempt * HEAVY
        return [await bench.parcel(XrayCase.HEAVY, first + i) for i in range(HEAVY)]

    async def analyse(parcels: list[Parcel]) -> None:
        results = await asyncio.gather(*(bench.analyse(parcel) for parcel in parcels))
        assert len(results) == HEAVY

    await unblocked(ready, analyse, f"{HEAVY} heavy parcels were analysed together")
