"""Site-file settings for running the twin as the plant of a live controller (demos, rigs).

``TwinPlant`` is the site file's ``plant`` section; ``InProcessSorterSettings``,
``PlantXray`` and ``PlantReview`` are the sorter, X-ray and review types the twin plays
(``type: inprocess`` / ``plant``). Pydantic only: :mod:`simulation.site_plant` builds them
(loading SimPy and numpy) and :mod:`simulation.registration` registers them, so the
controller reaches the twin only through the adapter registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TwinPlant(_Strict):
    """The digital twin plays the plant: sorters, scanner, review room and inspection."""

    type: Literal["twin"] = "twin"
    scenario: Path
    """Scenario file (traffic, staffing, faults); its lines must match this site's."""
    speed: PositiveFloat = 10.0
    """Plant seconds per wall second (the controller's clock runs at the same speed)."""
    tick_s: float = Field(default=0.005, gt=0, le=1)
    """How often, at most, the plant is stepped (wall seconds)."""
    scanner_images: int = Field(default=0, ge=0, le=200)
    """Render this many X-ray images per ground-truth class at start and hand each parcel's
    image to the site's in-process intake source at scan time (for ``xray: {type: onnx}``);
    0: no images (``xray: {type: plant}`` takes the detector model's scores instead)."""


class InProcessSorterSettings(_Strict):
    """The sorter is played in this process by the plant (the twin): no PLC, no wire."""

    type: Literal["inprocess"] = "inprocess"


class PlantXray(_Strict):
    """X-ray scores come from the plant model's detector (the digital twin; demos)."""

    type: Literal["plant"]


class PlantReview(_Strict):
    """The plant model's officers review on screen (the digital twin; demos)."""

    type: Literal["plant"]
