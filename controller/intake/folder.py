"""Watch-folder intake: a scanner (or its gateway) writes image files into a folder.

The folder is polled every ``poll_s``. A file is taken only when it looks complete: its name
does not mark it as in progress (see :mod:`controller.intake.naming`) and its size and
modification time are unchanged across two polls at least ``settle_s`` apart, so a file still
being copied is left alone. Each taken file is decoded on a worker thread, handed to the
matcher (with its read error, if any, so the parcel goes to inspection with the reason) and
moved to ``done/`` or ``failed/`` under the folder: files are never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core.clock import Clock, MonotonicClock
from controller.core.ports import ScanImage
from controller.intake.dicom import read_dicom_file
from controller.intake.matcher import ImageMatcher
from controller.intake.naming import ImageKey, NamingError, in_progress, key_from_filename
from controller.intake.readers import ImageReadError, read_image_file
from controller.intake.threat_report import DicomReferences

log = logging.getLogger(__name__)

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One file's key, pixels (or read error) and, for DICOM, its reference."""

    key: ImageKey | None
    pixels: Any
    error: str | None
    reference: Any = None


Decoder = Callable[[Path], Decoded]


def decode_image_file(path: Path) -> Decoded:
    """PNG / TIFF / .npy: the key is in the file name."""
    try:
        key: ImageKey | None = key_from_filename(path)
    except NamingError as exc:
        return Decoded(None, None, str(exc))
    try:
        return Decoded(key, read_image_file(path), None)
    except ImageReadError as exc:
        return Decoded(key, None, str(exc))


def decode_dicom_file(path: Path) -> Decoded:
    """DICOM / DICOS: the key is in the dataset; the file name is the fallback."""
    try:
        image = read_dicom_file(path)
    except ImageReadError as exc:
        return Decoded(_key_or_none(path), None, str(exc))
    key = image.key or _key_or_none(path)
    error = image.error
    if key is None and error is None:
        error = image.key_error
    return Decoded(key, image.pixels, error, image.reference)


def _key_or_none(path: Path) -> ImageKey | None:
    try:
        return key_from_filename(path)
    except NamingError:
        return None


class FolderSource:
    """Polls one folder for image files and feeds them to the matcher."""

    def __init__(
        self,
        folder: Path,
        matcher: ImageMatcher,
        decode: Decoder,
        *,
        patterns: Sequence[str],
        poll_s: float = 0.2,
        settle_s: float = 0.5,
        line: str | None = None,
        name: str = "watch_folder",
        references: DicomReferences | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.folder = folder
        self.matcher = matcher
        self.decode = decode
        self.patterns = tuple(p.lower() for p in patterns)
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.line = line
        self.name = name
        self.references = references
        self.clock: Clock = clock or MonotonicClock()
        self.taken = 0
        self.failed = 0
        self._seen: dict[Path, tuple[int, int]] = {}

    async def run(self) -> None:
        """Poll until cancelled; a bad file never stops the loop."""
        outage = False
        while True:
            try:
                await self.poll_once()
                if outage:
                    log.info("%s: folder %s readable again", self.name, self.folder)
                    outage = False
            except OSError as exc:
                if not outage:
                    log.error("%s: cannot read folder %s: %r", self.name, self.folder, exc)
                    outage = True
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> int:
        """Take every file that has settled; returns how many were handed over."""
        ready = await asyncio.to_thread(self._ready_files)
        for path in ready:
            image, reference = await asyncio.to_thread(self._take, path)
            if reference is not None and self.references is not None:
                self.references.remember(image, reference)
            self.matcher.deliver(image, self.line)
        return len(ready)

    def _ready_files(self) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        current: dict[Path, tuple[int, int]] = {}
        ready = []
        for path in sorted(self.folder.iterdir()):
            if not path.is_file() or in_progress(path) or not self._wanted(path):
                continue
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            current[path] = signature
            settled = now - stat.st_mtime_ns / 1e9 >= self.settle_s
            if self._seen.get(path) == signature and settled:
                ready.append(path)
                del current[path]
        self._seen = current
        return ready

    def _wanted(self, path: Path) -> bool:
        name = path.name.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def _take(self, path: Path) -> tuple[ScanImage, Any]:
        decoded = self.decode(path)
        image = ScanImage(
            hawb=decoded.key.hawb if decoded.key else "",
            tracking_id=decoded.key.tracking_id if decoded.key else None,
            source=f"{self.name}:{path.name}",
            received_at=self.clock.now(),
            pixels=decoded.pixels,
            error=decoded.error if decoded.pixels is None else None,
        )
        bad = decoded.pixels is None
        if bad:
            self.failed += 1
            log.warning("%s: %s", self.name, decoded.error)
        self.taken += 1
        target = self.folder / (FAILED if bad else DONE)
        target.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.replace(_free_name(target / path.name))
        return image, decoded.reference


def _free_name(path: Path) -> Path:
    """``path``, or ``name.1.ext``, ``name.2.ext`` … if taken, so nothing is overwritten."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
    return candidate
