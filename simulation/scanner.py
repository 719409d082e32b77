"""The twin's scanner as an image source: rendered X-ray images handed to scanner intake.

With ``scanner_images`` set in the twin's plant settings, each parcel's image goes to the
site's in-process intake source at scan time, so the controller scores it with the real ONNX
model through the real matcher and inference service. Rendering takes tens of milliseconds, so
a bank of images per ground-truth class is rendered once at start and drawn from.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from simulation.xray_synth import THREAT_CLASSES, render_parcel

#: Hands one image to intake: (pixels, hawb, tracking_id).
ImagePush = Callable[[Any, str, int], None]


class ImageBank:
    """``per_class`` rendered images for clean parcels and for each renderable threat class.

    A contraband class the generator cannot draw (it is invisible on the X-ray, like
    counterfeits) gets a clean parcel's image, as on the floor.
    """

    def __init__(self, per_class: int, seed: int = 0) -> None:
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        self._rng = random.Random(seed)
        base = 9_000_000 + seed * 10_000
        self._images: dict[str | None, list[Any]] = {
            threat: [
                render_parcel(base + 1000 * k + i, threat=threat).pixels for i in range(per_class)
            ]
            for k, threat in enumerate((None, *THREAT_CLASSES))
        }

    def image_for(self, contraband: str | None) -> Any:
        images = self._images.get(contraband) or self._images[None]
        return self._rng.choice(images)
