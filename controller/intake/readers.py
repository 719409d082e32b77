"""Image files → numpy arrays: PNG and TIFF (8/16-bit greyscale), NumPy ``.npy``, DICOM/DICOS.

Every reader either returns an array or raises :class:`ImageReadError` whose message says
what is wrong with the file and what was expected; library exceptions that mean a damaged
file never leak out. Before a pixel is decoded, the file size and the image size read from
the header are checked against :class:`ImageLimits` (:class:`ImageLimitError` names the limit
and the value): a small file can promise a huge image, and decoding it first is how one
PNG used to take the controller down. Arrays are returned as stored (uint8/uint16, or float
for ``.npy``); the inference service checks dtype, shape and size.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from controller.intake.faults import (
    DEFAULT_LIMITS,
    ImageLimitError,
    ImageReadError,
    check_encoded_bytes,
    check_image_size,
)
from controller.intake.settings import ImageLimits

__all__ = ["IMAGE_SUFFIXES", "ImageLimitError", "ImageReadError", "read_image_file"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_PNG_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16}
#: Bytes per pixel of a decoded Pillow image (multi-band modes take 4 inside Pillow).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type


def read_image_file(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> NDArray[Any]:
    """Read one PNG, TIFF or .npy file within ``limits``; raise :class:`ImageReadError`
    (or :class:`ImageLimitError`) saying why not."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(
            f"{path.name}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{path.name}: cannot be read ({exc})") from None
    check_encoded_bytes(path.name, size, limits)
    if suffix == ".png":
        return _read_png(path, limits)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path, limits)
    return _read_npy(path, limits)


def check_array_header(
    label: str, shape: tuple[int, ...], dtype: np.dtype[Any], limits: ImageLimits
) -> None:
    """The limits for an array known by its shape and dtype only (TIFF and .npy headers):
    the last two axes are the plane (H×W), or the first two for a colour H×W×3|4 image."""
    dims = tuple(int(n) for n in shape) or (1,)
    if len(dims) == 3 and dims[-1] in (3, 4) and dims[0] > 4:
        height, width = dims[0], dims[1]
    else:
        height, width = (1, *dims)[-2:]
    decoded = math.prod(dims) * dtype.itemsize
    layout = f"shape {dims} {dtype}"
    check_image_size(
        label, limits, height=height, width=width, decoded_bytes=decoded, layout=layout
    )


def _png_header(path: Path) -> tuple[int, int, int] | None:
    """Width, height and bytes per pixel from a PNG's IHDR, read by hand: Pillow's own
    check refuses a bomb above 2 × ``Image.MAX_IMAGE_PIXELS`` without saying its size, and
    only warns below that."""
    with path.open("rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None  # not a PNG: Pillow identifies it, or says it cannot
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, _PNG_CHANNELS.get(colour, 4) * max(1, depth // 8)


def _check_pillow_size(
    label: str, width: int, height: int, per_pixel: int, what: str, limits: ImageLimits
) -> None:
    check_image_size(
        label,
        limits,
        height=height,
        width=width,
        decoded_bytes=width * height * per_pixel,
        layout=f"{width}×{height} px × {per_pixel} B ({what})",
    )


def _read_png(path: Path, limits: ImageLimits) -> NDArray[Any]:
    try:
        header = _png_header(path)
        if header is not None:
            _check_pillow_size(path.name, *header, "PNG header", limits)
        with Image.open(path) as image:  # reads the header only
            mode = image.mode
            width, height = image.size
            _check_pillow_size(path.name, width, height, _MODE_BYTES.get(mode, 4), mode, limits)
            if mode != "I" and mode not in _PNG_MODES:
                raise ImageReadError(
                    f"{path.name}: PNG mode {mode!r} (colour or palette); expected 8- or "
                    "16-bit greyscale"
                )
            image.load()
            if mode == "I":  # some encoders yield 32-bit mode for 16-bit greyscale
                pixels = np.asarray(image)
                if pixels.min() < 0 or pixels.max() > 65535:
                    raise ImageReadError(f"{path.name}: 32-bit PNG values exceed 16 bits")
                return pixels.astype(np.uint16)
            return np.asarray(image, dtype=_PNG_MODES[mode])
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:  # a format whose header we do not read
        raise ImageLimitError(
            f"{path.name}: {exc} (Pillow's own limit); the limit is "
            f"max_pixels={limits.max_pixels:,}"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path.name}: not a readable PNG (corrupt or wrong type)") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageReadError(f"{path.name}: PNG is corrupt or truncated ({exc})") from None


def _read_tiff(path: Path, limits: ImageLimits) -> NDArray[Any]:
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.series:
                raise ImageReadError(
                    f"{path.name}: TIFF is corrupt or truncated (no image data in it)"
                )
            series = tiff.series[0]  # what tifffile.imread reads
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            check_array_header(path.name, shape, dtype, limits)
            if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
                raise ImageReadError(
                    f"{path.name}: TIFF is colour (shape {shape}); expected greyscale H×W or "
                    "a C×H×W stack of energy channels"
                )
            pixels = series.asarray()
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageReadError(f"{path.name}: TIFF is corrupt or truncated ({exc})") from None
    array = np.asarray(pixels)
    if array.size == 0:
        raise ImageReadError(f"{path.name}: TIFF is corrupt or truncated (no image data in it)")
    return array


def _read_npy(path: Path, limits: ImageLimits) -> NDArray[Any]:
    try:
        # mmap_mode reads the header and maps the data without loading it; it also refuses
        # a header that promises more data than the file holds
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ImageReadError(f"{path.name}: .npy is corrupt or truncated ({exc})") from None
    if not isinstance(mapped, np.ndarray):
        close = getattr(mapped, "close", None)
        if close is not None:
            close()
        raise ImageReadError(f"{path.name}: expected one array, got {type(mapped).__name__}")
    try:
        check_array_header(path.name, mapped.shape, mapped.dtype, limits)
        return np.array(mapped)  # a plain in-memory copy; the map is released with ``mapped``
    except OSError as exc:
        raise ImageReadError(f"{path.name}: .npy is corrupt or truncated ({exc})") from None
    finally:
        del mapped
