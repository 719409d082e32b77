"""The X-ray kits: the ONNX inference service with the shipped model (images pushed through
CargoGate's real matcher by an in-process scanner), the built-in ``none`` detector and the
drills' scripted detector."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import controller.app
import controller.inference
import simulation.drills
from controller.app.builtin import NoImages, NoXray, no_xray
from controller.conformance.harness import Parcel, XrayCase, XrayContext
from controller.inference.factory import build_onnx_xray
from controller.inference.service import OnnxXrayService
from controller.inference.settings import OnnxXray
from controller.intake.inprocess import InProcessScanner
from controller.intake.matcher import ImageMatcher
from controller.intake.quarantine import Quarantine
from simulation.drills.xray import DrillXray, ScriptedXray, drill_xray

MODEL = Path(__file__).resolve().parents[3] / "models" / "xray-cnn-v1.onnx"
"""The shipped model (the model's input is 128×96; images must be at least that)."""
LINE = "L1"
ADAPTERS = ("onnx", "none", "drill")


def parcel_image(seed: int, shape: tuple[int, int] = (192, 256)) -> NDArray[np.uint16]:
    """A uint16 transmission image with a dense object, different for every ``seed``."""
    rng = np.random.default_rng(seed)
    image = rng.random(shape) * 0.6 + 0.2
    h, w = shape
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    image[top : top + h // 3, left : left + w // 4] *= 0.05 + 0.3 * rng.random()
    return (image * 65535).astype(np.uint16)


def large_image(seed: int, shape: tuple[int, int] = (3000, 4000)) -> NDArray[np.uint16]:
    """A scanner's full-resolution image (24 MB), costly to bring down to the model's input."""
    return np.random.default_rng(seed).integers(13_000, 52_000, size=shape, dtype=np.uint16)


@dataclass
class _Parcels:
    """Tracking ids and HAWBs that never repeat within a harness."""

    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next(self, case: XrayCase, index: int) -> Parcel:
        tracking_id = next(self.ids)
        return Parcel(LINE, tracking_id, f"KIT-{case.value.replace('_', '')}-{index}-{tracking_id}")


@dataclass(frozen=True)
class XrayKit:
    """One of this project's X-ray adapters, by its ``type`` key."""

    adapter: str

    @property
    def checklist(self) -> Path:
        homes = {
            "onnx": Path(controller.inference.__file__).parent,
            "none": Path(controller.app.__file__).parent,
            "drill": Path(simulation.drills.__file__).parent,
        }
        return homes[self.adapter] / f"xray-{self.adapter}.conformance.toml"

    def open(
        self, ctx: XrayContext
    ) -> AbstractAsyncContextManager[OnnxHarness | NoneHarness | DrillHarness]:
        if self.adapter == "onnx":
            return open_onnx(ctx)
        if self.adapter == "none":
            return open_none(ctx)
        return open_drill(ctx)


# --- onnx ------------------------------------------------------------------------------------


@dataclass
class OnnxHarness:
    xray: OnnxXrayService
    scanner: InProcessScanner
    parcels: _Parcels = field(default_factory=_Parcels)

    async def parcel(self, case: XrayCase, index: int = 0) -> Parcel:
        parcel = self.parcels.next(case, index)
        if case is XrayCase.SCORABLE:
            self.scanner.push(parcel_image(index), hawb=parcel.hawb)
        elif case is XrayCase.HEAVY:  # a large image that is no whole multiple of the input
            pixels = await asyncio.to_thread(large_image, 1000 + index)
            self.scanner.push(pixels, hawb=parcel.hawb)
        elif case is XrayCase.UNREADABLE:
            self.scanner.push(None, hawb=parcel.hawb, error="the scanner's file was truncated")
        # NO_IMAGE and SLOW: no image comes; the service answers missing after image_wait_s
        return parcel


@asynccontextmanager
async def open_onnx(ctx: XrayContext) -> AsyncIterator[OnnxHarness]:
    matcher = ImageMatcher(Quarantine(ctx.folder / "quarantine"), hold_s=60, alarms=ctx.alarms)
    settings = OnnxXray(type="onnx", model=MODEL, image_wait_s=2.0, timeout_s=10.0)
    service = build_onnx_xray(settings, matcher, alarms=ctx.alarms)
    sweeper = asyncio.get_running_loop().create_task(matcher.run())
    try:
        async with service:
            yield OnnxHarness(service, InProcessScanner(matcher))
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)


# --- none ------------------------------------------------------------------------------------


@dataclass
class NoneHarness:
    """No X-ray source: every parcel lacks an image, so only those cases exist."""

    xray: NoImages
    parcels: _Parcels = field(default_factory=_Parcels)

    async def parcel(self, case: XrayCase, index: int = 0) -> Parcel:
        if case not in (XrayCase.NO_IMAGE, XrayCase.HEAVY):
            raise NotImplementedError(f"no X-ray source: no {case.value} parcel")
        return self.parcels.next(case, index)


@asynccontextmanager
async def open_none(ctx: XrayContext) -> AsyncIterator[NoneHarness]:
    yield NoneHarness(no_xray(NoXray(), ctx))


# --- drill -----------------------------------------------------------------------------------


@dataclass
class DrillHarness:
    """The scripted detector scores every parcel at once from its HAWB; half of the HAWBs
    score a firearm (``alarm_rate`` 0.5), so parcels tell apart."""

    xray: ScriptedXray
    parcels: _Parcels = field(default_factory=_Parcels)

    async def parcel(self, case: XrayCase, index: int = 0) -> Parcel:
        if case not in (XrayCase.SCORABLE, XrayCase.HEAVY):
            raise NotImplementedError(f"a scripted detector has no image: no {case.value} parcel")
        return Parcel(LINE, next(self.parcels.ids), f"KIT-DRILL-{index}")  # scored by HAWB


@dataclass(frozen=True)
class _Policy:
    policy_classes: tuple[str, ...] = ("firearm", "blade", "lithium_battery")


@asynccontextmanager
async def open_drill(ctx: XrayContext) -> AsyncIterator[DrillHarness]:
    yield DrillHarness(drill_xray(DrillXray(type="drill", alarm_rate=0.5), _Policy()))
