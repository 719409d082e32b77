"""Images that match no parcel are kept here, never dropped.

Each quarantined image is a JSON sidecar (who sent it, which key it carried, when, why it was
quarantined, any read error, where the source moved the original file) plus, when pixels were
read, the array as ``.npy`` next to it. An image that failed at intake (oversize, damaged)
has no pixels here: its original stays where ``file`` says, for inspection.
:meth:`Quarantine.entries` lists them for the floor and for tests. Writes block: call them
off the event loop.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.core.ports import ScanImage


@dataclass(frozen=True, slots=True)
class QuarantinedImage:
    sidecar: Path
    pixels_file: Path | None
    hawb: str
    tracking_id: int | None
    source: str
    received_at: float
    reason: str
    error: str | None
    shape: tuple[int, ...] | None
    dtype: str | None
    quarantined_at: str
    file: Path | None = None
    """The original file, where the source moved it (e.g. ``<inbox>/failed/x.png``)."""


class Quarantine:
    """A folder of unmatched images with their reasons."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._counter = itertools.count(1)

    def put(self, image: ScanImage, reason: str, *, file: Path | None = None) -> QuarantinedImage:
        """Write ``image``, why it is here and where its original ``file`` is; returns the
        entry. Blocking."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        key = image.hawb or (f"tid-{image.tracking_id}" if image.tracking_id is not None else "")
        safe_key = "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in key) or "nokey"
        stem = f"{now:%Y%m%dT%H%M%S%fZ}_{os.getpid()}_{next(self._counter)}_{safe_key}"
        pixels_file = None
        shape = dtype = None
        if isinstance(image.pixels, np.ndarray):
            pixels_file = self.folder / f"{stem}.npy"
            np.save(pixels_file, image.pixels, allow_pickle=False)
            shape, dtype = tuple(int(n) for n in image.pixels.shape), str(image.pixels.dtype)
        record = {
            "hawb": image.hawb,
            "tracking_id": image.tracking_id,
            "source": image.source,
            "received_at": image.received_at,
            "reason": reason,
            "error": image.error,
            "pixels_file": pixels_file.name if pixels_file else None,
            "shape": shape,
            "dtype": dtype,
            "quarantined_at": now.isoformat(),
            "file": str(file) if file is not None else None,
        }
        sidecar = self.folder / f"{stem}.json"
        partial = sidecar.with_suffix(".json.part")
        partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
        partial.replace(sidecar)  # a listing never sees a half-written record
        return _entry(sidecar, record)

    def entries(self) -> list[QuarantinedImage]:
        """Every quarantined image, oldest first. Blocking."""
        if not self.folder.is_dir():
            return []
        found = []
        for sidecar in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            found.append(_entry(sidecar, record))
        return found


def _entry(sidecar: Path, record: Mapping[str, object]) -> QuarantinedImage:
    pixels = record.get("pixels_file")
    shape = record.get("shape")
    tracking = record.get("tracking_id")
    received = record.get("received_at")
    original = record.get("file")
    return QuarantinedImage(
        sidecar=sidecar,
        pixels_file=sidecar.parent / str(pixels) if pixels else None,
        hawb=str(record.get("hawb") or ""),
        tracking_id=int(tracking) if isinstance(tracking, int) else None,
        source=str(record.get("source") or ""),
        received_at=float(received) if isinstance(received, int | float) else 0.0,
        reason=str(record.get("reason") or ""),
        error=str(record["error"]) if record.get("error") else None,
        shape=tuple(int(n) for n in shape) if isinstance(shape, list) else None,
        dtype=str(record["dtype"]) if record.get("dtype") else None,
        quarantined_at=str(record.get("quarantined_at") or ""),
        file=Path(original) if isinstance(original, str) and original else None,
    )
