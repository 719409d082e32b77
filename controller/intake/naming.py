"""How an image names its parcel: the key carried by a file name or a DICOM ID attribute.

A key is either a HAWB or a tracking id:

* ``<HAWB>`` — 1 to 32 letters, digits or hyphens (what the barcode reader reads);
* ``tid-<tracking id>`` — the PLC's tracking number (0 to 4294967295) on the source's line.

In a file name the key is the part of the stem before the first ``__`` (double underscore);
whatever follows is free for the scanner (view, timestamp, energy), e.g.
``CG000000042__top_view.png`` or ``tid-1234567.npy``. Files still being written are skipped
when their name starts with ``.`` or ends with ``.part``, ``.tmp`` or ``.partial``: write under
such a name, then rename.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HAWB = re.compile(r"^[A-Za-z0-9-]{1,32}$")
_TRACKING = re.compile(r"^tid-(\d{1,10})$", re.IGNORECASE)
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial")
MAX_TRACKING_ID = 2**32 - 1


class NamingError(ValueError):
    """A name does not carry a parcel key; the message shows the name and the convention."""


@dataclass(frozen=True, slots=True)
class ImageKey:
    """Which parcel an image belongs to: exactly one of ``hawb`` or ``tracking_id`` is set."""

    hawb: str = ""
    tracking_id: int | None = None

    def __str__(self) -> str:
        return self.hawb if self.hawb else f"tid-{self.tracking_id}"


def parse_key(text: str) -> ImageKey:
    """Read a key (``<HAWB>`` or ``tid-<n>``) from an identifier; raise :class:`NamingError`."""
    value = text.strip()
    tracking = _TRACKING.match(value)
    if tracking:
        number = int(tracking.group(1))
        if number > MAX_TRACKING_ID:
            raise NamingError(
                f"tracking id {number} in {text!r} is out of range; expected 0..{MAX_TRACKING_ID}"
            )
        return ImageKey(tracking_id=number)
    if _HAWB.match(value):
        return ImageKey(hawb=value)
    raise NamingError(
        f"{text!r} is not a parcel key; expected a HAWB (1-32 letters, digits or '-') "
        "or 'tid-<tracking id>'"
    )


def key_from_filename(path: Path) -> ImageKey:
    """The key in a file name: the stem up to the first ``__``."""
    stem = path.name.split(".", 1)[0]
    head = stem.split("__", 1)[0]
    try:
        return parse_key(head)
    except NamingError:
        raise NamingError(
            f"file name {path.name!r} carries no parcel key; name files '<HAWB>.<ext>', "
            "'<HAWB>__<anything>.<ext>' or 'tid-<tracking id>[__<anything>].<ext>'"
        ) from None


def in_progress(path: Path) -> bool:
    """True for names that mark a file still being written."""
    name = path.name
    return name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES)
