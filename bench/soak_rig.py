"""The soak rig's two adapters, registered like any integrator's: the rig as the site's plant
(its clock runs ``speed`` times the wall, as the emulated floor's does) and a stand-in X-ray
scanner. ``bench/soak.py`` declares this module under the entry-point group
``cargogate.adapters`` from a throwaway distribution on the controller's ``PYTHONPATH``, so
``cargogate run`` loads it as it loads ours; it imports nothing beyond the core.
"""

from __future__ import annotations

import asyncio
import signal
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat

from controller.core.clock import Clock, ScaledClock
from controller.core.domain import XrayResult, XrayStatus

TRACE_FRAMES = 6
"""Frames kept per allocation site when the soak traces the controller's allocations."""


class RigSettings(BaseModel):
    """``plant: {type: soak_rig, speed: N}``: the floor is an accelerated PLC emulator in
    another process; the controller's clock runs ``speed`` times the wall, as the floor's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["soak_rig"]
    speed: PositiveFloat
    snapshots: Path | None = None
    """For ``bench/soak.py --tracemalloc``: the first SIGUSR1 starts tracing the controller's
    allocations, each later one writes a snapshot into this folder."""


class ScannerSettings(BaseModel):
    """``xray: {type: soak_scanner}``: X-ray scores drawn from each HAWB's hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["soak_scanner"]


class Rig:
    """The rig as the site's plant: its clock alone; the floor talks through the sorters
    and the command socket, as on a site."""

    def __init__(self, speed: float, snapshots: Path | None = None) -> None:
        self._clock = ScaledClock(speed)
        self._snapshots = snapshots
        self._taken = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    def connect(self, parts: object) -> None:
        """Nothing to hook into: the PLCs and the officers reach the controller by wire."""

    async def play(self, duration_s: float | None, stop: asyncio.Event) -> None:
        if self._snapshots is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._trace)
        if duration_s is None:
            await asyncio.Event().wait()  # cancelled at stop (SIGTERM)
            return
        await asyncio.sleep(duration_s)
        stop.set()

    def counts(self) -> Mapping[str, int]:
        return {}

    def _trace(self) -> None:
        """Start tracing; on later calls, dump what was allocated since and is still held
        (a dump stalls the loop for a while)."""
        import tracemalloc

        assert self._snapshots is not None
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            return
        path = self._snapshots / f"snapshot-{self._taken}.pickle"
        hidden = path.with_name(f".{path.name}")
        tracemalloc.take_snapshot().dump(str(hidden))
        hidden.replace(path)  # complete once it appears
        self._taken += 1


_CLEAN = {
    "firearm": 0.01,
    "blade": 0.01,
    "lithium_battery": 0.01,
    "liquid_container": 0.01,
    "narcotics_organic": 0.01,
}
_ALARM = {**_CLEAN, "firearm": 0.9}
_AMBIGUOUS = {**_CLEAN, "blade": 0.2}


def xray_scores(hawb: str) -> Mapping[str, float]:
    """0.5 % of HAWBs alarm, 1 % are ambiguous, the rest are clean (by the default policy's
    thresholds)."""
    draw = zlib.crc32(b"xray:" + hawb.encode()) % 1000
    return _ALARM if draw < 5 else _AMBIGUOUS if draw < 15 else _CLEAN


class StandInScanner:
    """The X-ray port without images: every parcel scored at once from its HAWB."""

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, xray_scores(hawb), "soak-stand-in")


def rig(settings: RigSettings, ctx: object) -> Rig:
    """Factory of ``plant: {type: soak_rig}``."""
    return Rig(settings.speed, settings.snapshots)


def scanner(settings: ScannerSettings, ctx: object) -> StandInScanner:
    """Factory of ``xray: {type: soak_scanner}``."""
    return StandInScanner()


ADAPTERS = [
    {"kind": "plant", "type": "soak_rig", "settings": RigSettings, "factory": "soak_rig:rig"},
    {
        "kind": "xray",
        "type": "soak_scanner",
        "settings": ScannerSettings,
        "factory": "soak_rig:scanner",
    },
]
