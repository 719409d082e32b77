"""Image files → numpy arrays: PNG and TIFF (8/16-bit greyscale), NumPy ``.npy``, DICOM/DICOS.

Every reader either returns an array or raises :class:`ImageReadError` whose message says
what is wrong with the file and what was expected; library exceptions never leak out.
Arrays are returned as stored (uint8/uint16, or float for ``.npy``); the inference service
checks dtype, shape and size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_PNG_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16}


class ImageReadError(ValueError):
    """The file could not be read as a scanner image."""


def read_image_file(path: Path) -> NDArray[Any]:
    """Read one PNG, TIFF or .npy file; raise :class:`ImageReadError` saying why not."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _read_png(path)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    if suffix == ".npy":
        return _read_npy(path)
    raise ImageReadError(
        f"{path.name}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}"
    )


def _read_png(path: Path) -> NDArray[Any]:
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "I":  # some encoders yield 32-bit mode for 16-bit greyscale
                pixels = np.asarray(image)
                if pixels.min() < 0 or pixels.max() > 65535:
                    raise ImageReadError(f"{path.name}: 32-bit PNG values exceed 16 bits")
                return pixels.astype(np.uint16)
            if mode not in _PNG_MODES:
                raise ImageReadError(
                    f"{path.name}: PNG mode {mode!r} (colour or palette); expected 8- or 16-bit "
                    "greyscale"
                )
            return np.asarray(image, dtype=_PNG_MODES[mode])
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path.name}: not a readable PNG (corrupt or wrong type)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path.name}: PNG is corrupt or truncated ({exc})") from None


def _read_tiff(path: Path) -> NDArray[Any]:
    try:
        pixels = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageReadError(f"{path.name}: TIFF is corrupt or truncated ({exc})") from None
    array = np.asarray(pixels)
    if array.size == 0:
        raise ImageReadError(f"{path.name}: TIFF is corrupt or truncated (no image data in it)")
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
        raise ImageReadError(
            f"{path.name}: TIFF is colour (shape {array.shape}); expected greyscale H×W or a "
            "C×H×W stack of energy channels"
        )
    return array


def _read_npy(path: Path) -> NDArray[Any]:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ImageReadError(f"{path.name}: .npy is corrupt or truncated ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ImageReadError(f"{path.name}: expected one array, got {type(array).__name__}")
    return array
