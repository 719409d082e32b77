"""The scanners' images, kept a while for the review station.

:class:`ImageShelf` listens to the inference service (every scored image passes by it) and
keeps the latest images by parcel. The console serves each energy as an 8-bit PNG
of the image the scanner sent, both on one scale; the browser does the rest
(zoom, contrast, pseudo-colour) without asking again.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Literal

import numpy as np
from PIL import Image

from controller.core.domain import XrayResult
from controller.core.ports import ScanImage

Energy = Literal["high", "low"]
_CHANNEL = {"low": 0, "high": 1}
"""Dual-energy images arrive as (low, high) × H × W."""


class ImageShelf:
    """The latest images by parcel (HAWB and tracking id), at most ``keep`` of them and
    ``max_bytes`` in all; a result listener of the inference service."""

    def __init__(self, keep: int = 200, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self.bytes = 0
        self._images: OrderedDict[tuple[str, int | None], ScanImage] = OrderedDict()

    def __call__(self, image: ScanImage, result: XrayResult) -> None:
        if image.pixels is None or not image.hawb:
            return
        key = (image.hawb, image.tracking_id)
        if (old := self._images.pop(key, None)) is not None:
            self.bytes -= _size(old)
        self._images[key] = image
        self.bytes += _size(image)
        while self._images and (len(self._images) > self.keep or self.bytes > self.max_bytes):
            _, dropped = self._images.popitem(last=False)
            self.bytes -= _size(dropped)

    def __contains__(self, key: object) -> bool:
        return key in self._images

    def energies(self, hawb: str, tracking_id: int) -> int:
        """How many energies the parcel's image has (0 when none is kept)."""
        image = self._images.get((hawb, tracking_id))
        if image is None:
            return 0
        return 2 if np.ndim(image.pixels) == 3 and np.shape(image.pixels)[0] >= 2 else 1

    def png(self, hawb: str, tracking_id: int, energy: Energy = "high") -> bytes | None:
        """One energy of the parcel's image as an 8-bit grey PNG (blocking: call it in a
        thread); None if not kept. Both energies share one scale, the brightest pixel of
        either (open belt: full transmission), so the browser can still compare their
        attenuation (the material colour needs the low/high ratio) and a 12-bit detector
        keeps its grey levels."""
        image = self._images.get((hawb, tracking_id))
        if image is None:
            return None
        pixels = np.asarray(image.pixels)
        scale = _full_scale(pixels)
        if pixels.ndim == 3:
            pixels = pixels[min(_CHANNEL[energy], pixels.shape[0] - 1)]
        return _png(pixels, scale)


def _size(image: ScanImage) -> int:
    return int(getattr(image.pixels, "nbytes", 0))


def _full_scale(pixels: np.ndarray[tuple[int, ...], np.dtype[np.generic]]) -> float:
    top = float(np.max(pixels)) if pixels.size else 0.0
    return top if top > 0 else 1.0


def _png(pixels: np.ndarray[tuple[int, ...], np.dtype[np.generic]], scale: float) -> bytes:
    values = np.clip(pixels.astype(np.float32) * (255.0 / scale), 0, 255)
    out = io.BytesIO()
    Image.fromarray(values.astype(np.uint8), mode="L").save(out, format="PNG", compress_level=1)
    return out.getvalue()
