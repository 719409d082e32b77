"""Test images and an in-memory image source for inference tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.core.ports import ScanImage


def parcel_image(
    seed: int = 1, height: int = 96, width: int = 64, level: float = 0.4
) -> np.ndarray:
    """A uint16 transmission image with some structure, mostly dark enough not to trigger."""
    rng = np.random.default_rng(seed)
    base = rng.random((height, width)) * level
    base[height // 4 : height // 2, width // 3 : width // 2] *= 0.2  # a dense object
    return (base * 65535).astype(np.uint16)


@dataclass
class DictImages:
    """An ImageSource that answers from a dict by HAWB; unknown HAWBs wait forever."""

    images: dict[str, ScanImage] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def put(self, hawb: str, pixels: Any, error: str | None = None) -> None:
        self.images[hawb] = ScanImage(hawb, None, "test", 0.0, pixels, error)

    async def image_for(self, line: str, tracking_id: int, hawb: str) -> ScanImage:
        self.asked.append(hawb)
        if hawb in self.images:
            return self.images[hawb]
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
