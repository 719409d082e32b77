"""The image source suite: images reach their parcels, unmatched and keyless images are kept,
damaged images are reported, the source stops when told and never blocks the loop.

An image source (an intake adapter, ``kind: image_source``) delivers what its scanner sends to
CargoGate's matcher, the :class:`controller.core.ports.ImageSource` the X-ray service awaits.
Each test builds the matcher (quarantine in the rule's folder, ``hold_s`` short), has the
integrator's kit (fixture ``cargogate_images``) build the source through its factory, runs it
as the controller does, and plays one rule through the harness's scanner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from controller.alarms import Alarms
from controller.conformance.harness import ImageContext, ImageHarness, ImageKit
from controller.conformance.rules import (
    IMAGES_BAD_REPORTED,
    IMAGES_DELIVERED,
    IMAGES_KEYLESS_KEPT,
    IMAGES_NO_BLOCKING,
    IMAGES_STOPS,
    IMAGES_UNMATCHED_KEPT,
    Rule,
    covers,
)
from controller.conformance.running import WAIT_S, play, unblocked, wait_for
from controller.core.ports import ScanImage
from controller.intake.factory import SourceContext
from controller.intake.faults import DEFAULT_LIMITS, Fault
from controller.intake.matcher import ImageMatcher
from controller.intake.quarantine import Quarantine, QuarantinedImage
from controller.intake.threat_report import DicomReferences

HOLD_S = 1.0
"""How long the kit's matcher holds an unclaimed image before it quarantines it."""
STOP_WITHIN_S = 5.0
MATCHER = "intake"
QUARANTINE_ALARM = f"{MATCHER}/quarantine"
FAULT_ALARMS = frozenset(f"{MATCHER}/{fault}" for fault in Fault)
DEFAULT_LINE = "L1"


def pixels(seed: int, shape: tuple[int, int] = (48, 64)) -> NDArray[np.uint16]:
    """A uint16 image with structure, different for every ``seed``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1000, 60000, size=shape, dtype=np.uint16)
    image[shape[0] // 4 : shape[0] // 2, shape[1] // 3 : shape[1] // 2] //= 7  # a dense object
    return image


class Bench:
    """A running source and the matcher it feeds."""

    def __init__(self, harness: ImageHarness, matcher: ImageMatcher, alarms: Alarms) -> None:
        self.harness = harness
        self.matcher = matcher
        self.alarms = alarms
        self.line = harness.line or DEFAULT_LINE
        self._tracking = 0
        self._stop: Callable[[], Awaitable[float]] | None = None

    async def image_for(self, hawb: str, limit_s: float = WAIT_S) -> ScanImage:
        self._tracking += 1
        return await asyncio.wait_for(
            self.matcher.image_for(self.line, self._tracking, hawb), limit_s
        )

    async def quarantined(
        self, what: str, match: Callable[[QuarantinedImage], bool]
    ) -> QuarantinedImage:
        await wait_for(lambda: any(map(match, self.matcher.quarantined)), what, HOLD_S + WAIT_S)
        found = [entry for entry in self.matcher.quarantined if match(entry)]
        assert len(found) == 1, f"{what}: quarantined {len(found)} times"
        return found[0]

    async def stop(self) -> float:
        """Cancel the source; how long it took to end (seconds)."""
        assert self._stop is not None
        return await self._stop()


def check_image(image: ScanImage, hawb: str, expected: NDArray[np.uint16]) -> None:
    assert image.hawb == hawb, f"an image for {hawb!r} came as {image.hawb!r}"
    assert image.error is None, f"a readable image came with an error: {image.error!r}"
    assert image.pixels is not None, "a readable image came without pixels"
    got = np.asarray(image.pixels)
    assert got.shape[-2:] == expected.shape, (
        f"image {hawb}: shape {got.shape}, sent {expected.shape}"
    )
    assert np.array_equal(got.reshape(expected.shape), expected), f"image {hawb}: pixels changed"
    assert image.source, "an image names its source"


@contextlib.asynccontextmanager
async def running(
    harness: ImageHarness, matcher: ImageMatcher, alarms: Alarms
) -> AsyncIterator[Bench]:
    """Run the matcher and the source as the controller does (entering the source first if it
    is an async context manager); on exit stop both, if the rule has not."""
    source: Any = harness.source
    bench = Bench(harness, matcher, alarms)
    async with contextlib.AsyncExitStack() as stack:
        if hasattr(source, "__aenter__") and hasattr(source, "__aexit__"):
            await stack.enter_async_context(source)
        loop = asyncio.get_running_loop()
        sweeper = loop.create_task(matcher.run(), name="kit matcher")
        task = loop.create_task(source.run(), name="image source under test")
        stopped: float | None = None

        async def stop() -> float:
            nonlocal stopped
            if stopped is None:
                started = time.monotonic()
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_WITHIN_S * 2)
                stopped = time.monotonic() - started
            return stopped

        bench._stop = stop
        try:
            yield bench
        finally:
            await stop()
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"the source's run() failed: {task.exception()!r}")


def _play(
    kit: ImageKit, rule: Rule, folder: Path, body: Callable[[Bench], Awaitable[None]]
) -> None:
    async def scenario() -> None:
        alarms = Alarms(None, time.monotonic)
        matcher = ImageMatcher(
            Quarantine(folder / "quarantine"), hold_s=HOLD_S, alarms=alarms, name=MATCHER
        )
        sources = SourceContext(
            matcher, DicomReferences(), None, "intake.sources.0", DEFAULT_LIMITS
        )
        scanner = folder / "scanner"
        scanner.mkdir()
        ctx = ImageContext(matcher, sources, scanner, alarms)
        async with kit.open(ctx) as harness, running(harness, matcher, alarms) as bench:
            await body(bench)

    play(kit, rule, scenario)


# --- the rules -------------------------------------------------------------------------------


@covers(IMAGES_DELIVERED)
def test_an_image_reaches_its_parcel(cargogate_images: ImageKit, tmp_path: Path) -> None:
    _play(cargogate_images, IMAGES_DELIVERED, tmp_path, _delivered)


async def _delivered(bench: Bench) -> None:
    first, second = pixels(1), pixels(2)
    asking = asyncio.create_task(bench.image_for("KIT-A1"))
    await asyncio.sleep(0.05)  # the parcel asks before its image comes
    await bench.harness.send("KIT-A1", first)
    check_image(await asking, "KIT-A1", first)
    delivered = bench.matcher.delivered
    await bench.harness.send("KIT-B1", second)
    await wait_for(lambda: bench.matcher.delivered > delivered, "the second image delivered")
    check_image(await bench.image_for("KIT-B1", 1.0), "KIT-B1", second)  # held: at once
    assert bench.matcher.quarantined == [], "a matched image was quarantined"


@covers(IMAGES_UNMATCHED_KEPT)
def test_an_unmatched_image_is_kept(cargogate_images: ImageKit, tmp_path: Path) -> None:
    _play(cargogate_images, IMAGES_UNMATCHED_KEPT, tmp_path, _unmatched_kept)


async def _unmatched_kept(bench: Bench) -> None:
    sent = pixels(3)
    await bench.harness.send("KIT-U1", sent)
    entry = await bench.quarantined("the unclaimed image quarantined", lambda e: e.hawb == "KIT-U1")
    assert entry.reason, "a quarantined image says why it is there"
    assert entry.pixels_file is not None, "an unclaimed readable image is kept with its pixels"
    kept = await asyncio.to_thread(np.load, entry.pixels_file)
    assert np.array_equal(kept.reshape(sent.shape), sent), "the quarantined pixels differ"
    assert QUARANTINE_ALARM in bench.alarms.active, "an image in quarantine raises an alarm"


@covers(IMAGES_BAD_REPORTED)
def test_a_damaged_image_is_reported(cargogate_images: ImageKit, tmp_path: Path) -> None:
    _play(cargogate_images, IMAGES_BAD_REPORTED, tmp_path, _bad_reported)


async def _bad_reported(bench: Bench) -> None:
    await bench.harness.send_damaged("KIT-D1")
    image = await bench.image_for("KIT-D1")
    assert image.pixels is None, "a damaged image reached its parcel with pixels"
    assert image.error, "a damaged image tells its parcel why (the result becomes bad_image)"
    entry = await bench.quarantined("the damaged image on record", lambda e: e.hawb == "KIT-D1")
    assert entry.reason, "a quarantined image says why it is there"
    raised = FAULT_ALARMS & set(bench.alarms.active)
    assert raised, f"a damaged image raises one of {sorted(FAULT_ALARMS)}"
    later = pixels(4)
    await bench.harness.send("KIT-D2", later)  # the source is still running
    check_image(await bench.image_for("KIT-D2"), "KIT-D2", later)


@covers(IMAGES_KEYLESS_KEPT)
def test_an_image_without_a_parcel_key_is_kept(cargogate_images: ImageKit, tmp_path: Path) -> None:
    _play(cargogate_images, IMAGES_KEYLESS_KEPT, tmp_path, _keyless_kept)


async def _keyless_kept(bench: Bench) -> None:
    await bench.harness.send_keyless(pixels(5))
    entry = await bench.quarantined(
        "the keyless image quarantined", lambda e: not e.hawb and e.tracking_id is None
    )
    assert entry.reason, "a quarantined image says why it is there"
    kept = entry.pixels_file or entry.file
    assert kept is not None, "a keyless image is kept: its pixels or its original file"
    assert await asyncio.to_thread(kept.exists), f"{kept} is gone"
    assert QUARANTINE_ALARM in bench.alarms.active or FAULT_ALARMS & set(bench.alarms.active), (
        "an image in quarantine raises an alarm"
    )


@covers(IMAGES_STOPS)
def test_a_running_source_stops_when_cancelled(cargogate_images: ImageKit, tmp_path: Path) -> None:
    _play(cargogate_images, IMAGES_STOPS, tmp_path, _stops)


async def _stops(bench: Bench) -> None:
    sent = pixels(6)
    await bench.harness.send("KIT-S1", sent)
    check_image(await bench.image_for("KIT-S1"), "KIT-S1", sent)  # it runs
    took = await bench.stop()
    assert took < STOP_WITHIN_S, f"the source took {took:.1f} s to stop (at most {STOP_WITHIN_S})"


@covers(IMAGES_NO_BLOCKING)
def test_large_images_never_block_the_event_loop(
    cargogate_images: ImageKit, tmp_path: Path
) -> None:
    _play(cargogate_images, IMAGES_NO_BLOCKING, tmp_path, _no_blocking)


async def _no_blocking(bench: Bench) -> None:
    async def ready(attempt: int) -> list[tuple[str, NDArray[np.uint16]]]:
        seeds = range(10 + 4 * attempt, 14 + 4 * attempt)
        images = [await asyncio.to_thread(pixels, seed, (2048, 2048)) for seed in seeds]
        return [(f"KIT-L{seed}", image) for seed, image in zip(seeds, images, strict=True)]

    async def come_in(large: list[tuple[str, NDArray[np.uint16]]]) -> None:
        for hawb, image in large:
            await bench.harness.send(hawb, image)
        for hawb, image in large:
            check_image(await bench.image_for(hawb), hawb, image)

    await unblocked(ready, come_in, "4 images of 2048×2048 came in")
