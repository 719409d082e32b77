"""The drill's scripted X-ray detector (``xray: {type: drill}``): a seeded verdict per HAWB.

The PLC drills need parcels that are released, inspected and sent to exception, without a
scanner or a model in the way: this detector answers at once, clean for most HAWBs and with a
firearm score over any threshold for a seeded share of them (the same HAWBs every run). The
inference drills use the real ONNX service instead. Pydantic and the core only: registered in
:mod:`simulation.registration` and built through the adapter registry like any X-ray source.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import Field

from controller.core.domain import XrayResult, XrayStatus
from controller.core.settings import Strict

MODEL = "drill-xray"


class DrillXray(Strict):
    """A scripted detector: ``alarm_rate`` of the HAWBs (seeded by ``seed``) score a threat
    (a firearm, or the first class the policy names)."""

    type: Literal["drill"]
    seed: int = 7
    alarm_rate: float = Field(default=0.1, ge=0, le=1)


class _Context(Protocol):
    @property
    def policy_classes(self) -> Sequence[str]: ...


class ScriptedXray:
    """Implements :class:`controller.core.ports.XrayPort` from a seeded rule over the HAWB."""

    def __init__(self, settings: DrillXray, classes: Sequence[str]) -> None:
        self.settings = settings
        self.classes = tuple(classes)

    def alarmed(self, hawb: str) -> bool:
        draw = zlib.crc32(f"{self.settings.seed}/{hawb}".encode()) / 2**32
        return draw < self.settings.alarm_rate

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        await asyncio.sleep(0)
        scores = dict.fromkeys(self.classes, 0.001)
        if self.alarmed(hawb) and self.classes:
            scores["firearm" if "firearm" in scores else self.classes[0]] = 0.99
        return XrayResult(XrayStatus.OK, scores, MODEL)


def drill_xray(settings: DrillXray, ctx: _Context) -> ScriptedXray:
    """Registry factory of ``xray: {type: drill}``."""
    return ScriptedXray(settings, ctx.policy_classes)
