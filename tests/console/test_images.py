"""The review station's image shelf: which images it keeps and how it serves them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from controller.console.images import ImageShelf
from controller.core.domain import XrayResult, XrayStatus
from controller.core.ports import ScanImage

OK = XrayResult(XrayStatus.OK)


def _decoded(png: bytes | None) -> np.ndarray:
    assert png is not None
    return np.asarray(Image.open(io.BytesIO(png)))


def test_dual_energy_images_keep_one_scale_so_their_ratio_survives() -> None:
    shelf = ImageShelf()
    low = np.full((4, 6), 16384, np.uint16)  # a quarter of full scale: attenuates more
    high = np.full((4, 6), 32768, np.uint16)
    shelf(ScanImage("H1", 7, "scanner", 0.0, np.stack([low, high])), OK)
    assert shelf.energies("H1") == 2
    assert int(_decoded(shelf.png("H1", "low"))[0, 0]) == 63
    assert int(_decoded(shelf.png("H1", "high"))[0, 0]) == 127


def test_single_energy_serves_the_same_image_for_both_and_unknown_is_none() -> None:
    shelf = ImageShelf()
    shelf(ScanImage("H2", None, "scanner", 0.0, np.full((3, 3), 255, np.uint8)), OK)
    assert shelf.energies("H2") == 1
    assert (_decoded(shelf.png("H2", "low")) == _decoded(shelf.png("H2", "high"))).all()
    assert shelf.png("NOPE") is None
    assert shelf.energies("NOPE") == 0


def test_only_the_latest_images_are_kept_and_failed_images_not_at_all() -> None:
    shelf = ImageShelf(keep=2)
    for hawb in ("A", "B", "C"):
        shelf(ScanImage(hawb, None, "scanner", 0.0, np.zeros((2, 2), np.uint8)), OK)
    shelf(ScanImage("D", None, "scanner", 0.0, None, error="truncated file"), OK)
    assert [hawb in shelf for hawb in "ABCD"] == [False, True, True, False]
