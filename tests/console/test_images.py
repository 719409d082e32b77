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


def _image(hawb: str, tid: int | None, pixels: np.ndarray | None) -> ScanImage:
    return ScanImage(hawb, tid, "scanner", 0.0, pixels)


def test_dual_energy_images_keep_one_scale_so_their_ratio_survives() -> None:
    shelf = ImageShelf()
    low = np.full((4, 6), 1024, np.uint16)  # a 12-bit detector: a quarter of the open belt
    high = np.full((4, 6), 2048, np.uint16)
    high[0, 0] = 4095  # open belt
    shelf(_image("H1", 7, np.stack([low, high])), OK)
    assert shelf.energies("H1", 7) == 2
    assert int(_decoded(shelf.png("H1", 7, "low"))[1, 1]) == 63
    assert int(_decoded(shelf.png("H1", 7, "high"))[1, 1]) == 127
    assert int(_decoded(shelf.png("H1", 7, "high"))[0, 0]) == 255


def test_pieces_of_one_hawb_keep_their_own_images() -> None:
    shelf = ImageShelf()
    shelf(_image("MULTI", 1, np.zeros((2, 2), np.uint8)), OK)
    shelf(_image("MULTI", 2, np.full((2, 2), 200, np.uint8)), OK)
    assert int(_decoded(shelf.png("MULTI", 1))[0, 0]) == 0
    assert int(_decoded(shelf.png("MULTI", 2))[0, 0]) == 255
    assert shelf.png("MULTI", 3) is None
    assert shelf.energies("MULTI", 3) == 0


def test_the_shelf_is_bounded_by_count_and_bytes_and_skips_failed_images() -> None:
    shelf = ImageShelf(keep=2)
    for tid in (1, 2, 3):
        shelf(_image("A", tid, np.zeros((2, 2), np.uint8)), OK)
    shelf(ScanImage("D", 4, "scanner", 0.0, None, error="truncated file"), OK)
    assert [("A", t) in shelf for t in (1, 2, 3)] == [False, True, True]
    assert ("D", 4) not in shelf
    small = ImageShelf(keep=100, max_bytes=1000)
    for tid in range(5):
        small(_image("B", tid, np.zeros((10, 30), np.uint8)), OK)  # 300 bytes each
    assert small.bytes <= 1000
    assert [("B", t) in small for t in range(5)] == [False, False, True, True, True]
