"""Raw scanner image → model input tensor, in numpy, exactly as the model contract says.

Steps, per channel: check the array (dtype, shape, size, finite values); area-resize to the
model's H×W (the mean over each output pixel's footprint); divide by the dtype's full scale
to get transmission in [0, 1] (uint8 → 255, uint16 → 65535; float input must already lie in
[0, 1]); optionally ``-log(max(t, 1e-4))``; then ``(x - mean) / std``. The training pipeline
(``simulation/xray_synth.py``) applies the same steps in the same order, and a test checks
that both give the same tensor.

Integer resize factors go through exact integer strided sums (a 1024×768 16-bit image to
128×128 costs well under a millisecond); other factors use an exact separable area resize
(one weight matrix per axis), the equivalent of PIL's BOX or OpenCV's INTER_AREA.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from controller.inference.contract import ModelContract

#: Transmission floor before the log: keeps fully opaque pixels finite.
MIN_TRANSMISSION = 1e-4
MAX_SIDE = 8192
MAX_PIXELS = 64_000_000

FloatArray = NDArray[np.float32]
_INTEGER_MAX = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class BadImageError(ValueError):
    """The image cannot be scored; the message names what is wrong and what was expected."""


def check_image(pixels: object, channels: int, height: int, width: int) -> NDArray[Any]:
    """Return ``pixels`` as a C×H×W array, or raise :class:`BadImageError` saying why not.

    Images smaller than the model input (``height``×``width``) are refused: upscaling would
    invent detail the scanner never saw.
    """
    if not isinstance(pixels, np.ndarray):
        raise BadImageError(
            f"image is a {type(pixels).__name__}; expected a numpy array (H×W or C×H×W)"
        )
    dtype = pixels.dtype
    if dtype not in _INTEGER_MAX and dtype not in _FLOATS:
        raise BadImageError(
            f"image dtype is {dtype}; expected uint8, uint16 or float32/float64 in [0, 1]"
        )
    if pixels.size == 0:
        raise BadImageError(f"image is empty (shape {pixels.shape})")
    if pixels.ndim == 2:
        image = pixels[np.newaxis]
    elif pixels.ndim == 3:
        image = pixels
    else:
        raise BadImageError(
            f"image has {pixels.ndim} dimensions (shape {pixels.shape}); expected H×W or C×H×W"
        )
    c, h, w = image.shape
    if c != channels:
        raise BadImageError(
            f"image has {c} channel(s) (shape {pixels.shape}); the model expects {channels}"
            + (" (a single-channel image cannot feed a multi-channel model)" if c == 1 else "")
        )
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise BadImageError(
            f"image is {w}×{h} px; the limit is {MAX_SIDE} px a side and "
            f"{MAX_PIXELS // 1_000_000} MP"
        )
    if h < height or w < width:
        raise BadImageError(
            f"image is {w}×{h} px; the model needs at least {width}×{height} px (W×H)"
        )
    if dtype in _FLOATS:
        low, high = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise BadImageError("image contains NaN or infinite values")
        if low < 0.0 or high > 1.0:
            raise BadImageError(
                f"float image spans [{low:.4g}, {high:.4g}]; float images must hold "
                "transmission in [0, 1]"
            )
    return image


def preprocess(pixels: object, contract: ModelContract) -> FloatArray:
    """One raw image → a float32 C×H×W tensor for ``contract``'s model. Thread-safe."""
    image = check_image(pixels, contract.channels, contract.height, contract.width)
    prep = contract.preprocessing
    scale = np.float32(1.0 / _full_scale(image.dtype))
    out = np.empty((contract.channels, contract.height, contract.width), dtype=np.float32)
    for ch in range(contract.channels):
        t = area_resize(image[ch], contract.height, contract.width)
        t *= scale
        if prep.log_transmission:
            np.maximum(t, np.float32(MIN_TRANSMISSION), out=t)
            np.log(t, out=t)
            np.negative(t, out=t)
        np.subtract(t, np.float32(prep.mean[ch]), out=out[ch])
        out[ch] *= np.float32(1.0 / prep.std[ch])
    return out


def _full_scale(dtype: np.dtype[Any]) -> int:
    return _INTEGER_MAX.get(dtype, 1)


def area_resize(plane: NDArray[Any], height: int, width: int) -> FloatArray:
    """Area-average one H×W plane of raw values to height×width, as a new float32 array."""
    h, w = plane.shape
    if h % height == 0 and w % width == 0:
        return _block_mean(plane, h // height, w // width)
    rows = _area_weights(h, height)
    cols = _area_weights(w, width)
    values = plane.astype(np.float32, copy=False)
    columns_first = h * width <= height * w  # shrink the longer way first: fewer operations
    out = rows @ (values @ cols.T) if columns_first else (rows @ values) @ cols.T
    return np.asarray(out, dtype=np.float32)


def _block_mean(plane: NDArray[Any], fh: int, fw: int) -> FloatArray:
    """Mean over fh×fw blocks by strided sums (several times faster than reshape().mean()).

    Integer planes are summed exactly in a wide integer type, floats in float64.
    """
    if plane.dtype.kind == "u":
        wide: type[np.generic] = np.uint32 if fh * fw <= 65536 else np.uint64
    else:
        wide = np.float64
    acc = plane[0::fh].astype(wide)
    for k in range(1, fh):
        acc += plane[k::fh]
    out = acc[:, 0::fw].copy()
    for k in range(1, fw):
        out += acc[:, k::fw]
    mean: FloatArray = out.astype(np.float32)
    mean *= np.float32(1.0 / (fh * fw))
    return mean


@lru_cache(maxsize=32)
def _area_weights(size_in: int, size_out: int) -> FloatArray:
    """Row i holds the share of each input pixel inside output pixel i's span (rows sum to 1)."""
    scale = size_in / size_out
    edges = np.arange(size_out + 1, dtype=np.float64) * scale
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0.0, None)
    weights: FloatArray = (overlap / scale).astype(np.float32)
    weights.flags.writeable = False
    return weights
