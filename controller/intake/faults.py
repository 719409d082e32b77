"""Why an image did not make it through intake, and the size limits checked before decoding.

Readers raise :class:`ImageReadError` (the file is damaged or of the wrong kind) or
:class:`ImageLimitError` (the header promises more than :class:`ImageLimits` allows); each
carries its :class:`Fault`, which names the alarm the matcher raises and the condition the
floor sees in the quarantine. Checks run on header values only, so a decompression bomb is
refused before a byte of it is inflated.
"""

from __future__ import annotations

from enum import StrEnum

from controller.intake.settings import ImageLimits

DEFAULT_LIMITS = ImageLimits()


class Fault(StrEnum):
    """A kind of intake failure: one alarm each (``intake/<value>``), raised once until
    acknowledged, however many images share it."""

    OVERSIZE = "image_oversize"
    UNREADABLE = "image_unreadable"
    DECODER_ERROR = "decoder_error"
    INTERRUPTED = "decode_interrupted"

    @property
    def text(self) -> str:
        """How the quarantine record and the alarm describe it."""
        return _TEXT[self]


_TEXT = {
    Fault.OVERSIZE: "image over the intake limits",
    Fault.UNREADABLE: "unreadable image",
    Fault.DECODER_ERROR: "the image decoder failed",
    Fault.INTERRUPTED: "decoding was interrupted by a stop of the controller",
}


class ImageReadError(ValueError):
    """The file could not be read as a scanner image; the message says why."""

    fault = Fault.UNREADABLE


class ImageLimitError(ImageReadError):
    """The image is bigger than the intake limits allow; the message names limit and value."""

    fault = Fault.OVERSIZE


def check_encoded_bytes(
    label: str, size: int, limits: ImageLimits = DEFAULT_LIMITS, *, what: str = "file"
) -> None:
    """Refuse a file (or a received dataset) over ``max_file_bytes`` before reading it."""
    if size > limits.max_file_bytes:
        raise ImageLimitError(
            f"{label}: {what} is {size:,} bytes; the limit is "
            f"max_file_bytes={int(limits.max_file_bytes):,}"
        )


def check_image_size(
    label: str,
    limits: ImageLimits,
    *,
    height: int,
    width: int,
    decoded_bytes: int,
    layout: str,
) -> None:
    """Refuse an image whose header gives more than ``max_pixels`` in a plane or more than
    ``max_decoded_bytes`` in all; ``layout`` says how the bytes were counted."""
    pixels = height * width
    if pixels > limits.max_pixels:
        raise ImageLimitError(
            f"{label}: image is {width}×{height} px ({pixels:,} px); the limit is "
            f"max_pixels={limits.max_pixels:,}"
        )
    if decoded_bytes > limits.max_decoded_bytes:
        raise ImageLimitError(
            f"{label}: image decodes to {decoded_bytes:,} bytes ({layout}); the limit is "
            f"max_decoded_bytes={int(limits.max_decoded_bytes):,}"
        )
