"""The scanners' images, kept a while for the review station.

:class:`ImageShelf` listens to the inference service (every scored image passes by it) and
keeps the latest ``keep`` images by HAWB. The console serves each energy as an 8-bit PNG
of the image the scanner sent, on the scanner's own full scale; the browser does the rest
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
    """The last ``keep`` images by HAWB; a result listener of the inference service."""

    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self._images: OrderedDict[str, ScanImage] = OrderedDict()

    def __call__(self, image: ScanImage, result: XrayResult) -> None:
        if image.pixels is None or not image.hawb:
            return
        self._images[image.hawb] = image
        self._images.move_to_end(image.hawb)
        while len(self._images) > self.keep:
            self._images.popitem(last=False)

    def __contains__(self, hawb: object) -> bool:
        return hawb in self._images

    def energies(self, hawb: str) -> int:
        """How many energies the HAWB's image has (0 when none is kept)."""
        image = self._images.get(hawb)
        if image is None:
            return 0
        return 2 if np.ndim(image.pixels) == 3 and np.shape(image.pixels)[0] >= 2 else 1

    def png(self, hawb: str, energy: Energy = "high") -> bytes | None:
        """One energy of the image as an 8-bit grey PNG (blocking: call it in a thread);
        None if not kept. Both energies share one scale, so the browser can still compare
        their attenuation (the material colour needs the low/high ratio)."""
        image = self._images.get(hawb)
        if image is None:
            return None
        pixels = np.asarray(image.pixels)
        scale = _full_scale(pixels)
        if pixels.ndim == 3:
            pixels = pixels[min(_CHANNEL[energy], pixels.shape[0] - 1)]
        return _png(pixels, scale)


def _full_scale(pixels: np.ndarray[tuple[int, ...], np.dtype[np.generic]]) -> float:
    """The value that means full transmission: the integer type's top (a scanner's counts),
    or for float images the brightest pixel of all energies."""
    if np.issubdtype(pixels.dtype, np.integer):
        return float(np.iinfo(pixels.dtype.name).max)
    top = float(np.max(pixels)) if pixels.size else 0.0
    return top if top > 0 else 1.0


def _png(pixels: np.ndarray[tuple[int, ...], np.dtype[np.generic]], scale: float) -> bytes:
    values = np.clip(pixels.astype(np.float32) * (255.0 / scale), 0, 255)
    out = io.BytesIO()
    Image.fromarray(values.astype(np.uint8), mode="L").save(out, format="PNG", compress_level=1)
    return out.getvalue()
