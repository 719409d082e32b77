"""Watch-folder intake: a scanner (or its gateway) writes image files into a folder.

The folder is polled every ``poll_s``. A file is taken only when it looks complete: its name
does not mark it as in progress (see :mod:`controller.intake.naming`) and its size and
modification time are unchanged across two polls at least ``settle_s`` apart, so a file still
being copied is left alone.

A taken file is first moved to ``processing/`` under the folder, then decoded on a worker
thread within the intake's :class:`ImageLimits`, handed to the matcher (with its read error
and :class:`Fault`, if any, so the parcel goes to inspection with the reason and the image is
quarantined) and moved on to ``done/`` or ``failed/``: files are never deleted. Taking the
file out of the inbox before decoding means no file is met twice: should a decoder ever kill
the process, the next start finds the file in ``processing/``, does not decode it again,
moves it to ``failed/`` and reports it as :attr:`Fault.INTERRUPTED`. Nothing a file does —
oversize, damaged, a decoder raising — stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core.clock import Clock, MonotonicClock
from controller.core.ports import ScanImage
from controller.intake.dicom import read_dicom_file
from controller.intake.faults import DEFAULT_LIMITS, Fault, ImageReadError
from controller.intake.matcher import ImageMatcher
from controller.intake.naming import ImageKey, NamingError, in_progress, key_from_filename
from controller.intake.readers import read_image_file
from controller.intake.settings import ImageLimits
from controller.intake.threat_report import DicomReferences

log = logging.getLogger(__name__)

DONE = "done"
FAILED = "failed"
PROCESSING = "processing"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One file's key, pixels (or read error and its fault) and, for DICOM, its reference.

    No pixels and no fault means the name carried no key (the file was not decoded)."""

    key: ImageKey | None
    pixels: Any
    error: str | None
    reference: Any = None
    fault: Fault | None = None


Decoder = Callable[[Path], Decoded]


def decode_image_file(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> Decoded:
    """PNG / TIFF / .npy: the key is in the file name."""
    try:
        key: ImageKey | None = key_from_filename(path)
    except NamingError as exc:
        return Decoded(None, None, str(exc))
    try:
        return Decoded(key, read_image_file(path, limits), None)
    except ImageReadError as exc:
        return Decoded(key, None, str(exc), fault=exc.fault)


def decode_dicom_file(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> Decoded:
    """DICOM / DICOS: the key is in the dataset; the file name is the fallback."""
    try:
        image = read_dicom_file(path, limits)
    except ImageReadError as exc:
        return Decoded(_key_or_none(path), None, str(exc), fault=exc.fault)
    key = image.key or _key_or_none(path)
    error = image.error
    if key is None and error is None:
        error = image.key_error
    return Decoded(key, image.pixels, error, image.reference, image.fault)


def decoder(dicom: bool, limits: ImageLimits) -> Decoder:
    """The decoder for a folder of images or of DICOM files, within ``limits``."""
    return functools.partial(decode_dicom_file if dicom else decode_image_file, limits=limits)


def _key_or_none(path: Path) -> ImageKey | None:
    try:
        return key_from_filename(path)
    except NamingError:
        return None


@dataclass(frozen=True, slots=True)
class _Taken:
    image: ScanImage
    reference: Any
    fault: Fault | None
    file: Path


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
        self.polls = 0
        self._seen: dict[Path, tuple[int, int]] = {}
        self._stuck: dict[Path, tuple[int, int]] = {}
        """Files that could not be moved out of the inbox, by signature: retried on change."""
        self._recovered = False

    async def run(self) -> None:
        """Poll until cancelled; neither a bad file nor a failing folder stops the loop."""
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
            except Exception:  # a bug must not stop intake: say so and poll again
                log.exception("%s: poll of %s failed", self.name, self.folder)
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> int:
        """Take every file that has settled; returns how many were handed over."""
        self.polls += 1
        if not self._recovered:
            for left in await asyncio.to_thread(self._recover):
                self._hand_over(left)
            self._recovered = True
        ready = await asyncio.to_thread(self._ready_files)
        handed = 0
        for path in ready:
            taken = await asyncio.to_thread(self._take, path)
            if taken is not None:
                self._hand_over(taken)
                handed += 1
        return handed

    def _hand_over(self, taken: _Taken) -> None:
        if taken.reference is not None and self.references is not None:
            self.references.remember(taken.image, taken.reference)
        self.matcher.deliver(taken.image, self.line, fault=taken.fault, file=taken.file)

    def _ready_files(self) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        current: dict[Path, tuple[int, int]] = {}
        ready = []
        for path in sorted(self.folder.iterdir()):
            if not path.is_file() or in_progress(path) or not self._wanted(path):
                continue
            signature = _signature(path)
            if self._stuck.get(path) == signature:
                continue
            current[path] = signature
            settled = now - signature[1] / 1e9 >= self.settle_s
            if self._seen.get(path) == signature and settled:
                ready.append(path)
                del current[path]
        self._seen = current
        self._stuck = {p: sig for p, sig in self._stuck.items() if p.exists()}
        return ready

    def _wanted(self, path: Path) -> bool:
        name = path.name.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def _take(self, path: Path) -> _Taken | None:
        """Claim ``path`` (out of the inbox), decode it, move it on. Never raises for a file."""
        claimed = self._claim(path)
        if claimed is None:
            return None
        try:
            decoded = self.decode(claimed)
        except Exception as exc:  # MemoryError included: whatever a decoder does is an answer
            log.exception("%s: decoder failed on %s", self.name, claimed)
            decoded = Decoded(
                _key_or_none(path),
                None,
                f"{path.name}: the decoder raised {exc!r}",
                fault=Fault.DECODER_ERROR,
            )
        bad = decoded.pixels is None
        if bad:
            self.failed += 1
            log.warning("%s: %s", self.name, decoded.error)
        self.taken += 1
        final = self._move(claimed, FAILED if bad else DONE)
        image = ScanImage(
            hawb=decoded.key.hawb if decoded.key else "",
            tracking_id=decoded.key.tracking_id if decoded.key else None,
            source=f"{self.name}:{path.name}",
            received_at=self.clock.now(),
            pixels=decoded.pixels,
            error=decoded.error if bad else None,
        )
        return _Taken(image, decoded.reference, decoded.fault if bad else None, final)

    def _claim(self, path: Path) -> Path | None:
        """Move ``path`` into ``processing/``; None if it vanished or cannot be moved."""
        processing = self.folder / PROCESSING
        try:
            processing.mkdir(exist_ok=True)
            claimed = _free_name(processing / path.name)
            path.replace(claimed)
        except FileNotFoundError:
            return None
        except OSError as exc:  # left alone until it changes: never decoded in the inbox
            log.error("%s: cannot move %s out of the inbox, skipping it: %r", self.name, path, exc)
            with contextlib.suppress(OSError):
                self._stuck[path] = _signature(path)
            return None
        return claimed

    def _move(self, path: Path, to: str) -> Path:
        target = self.folder / to
        try:
            target.mkdir(exist_ok=True)
            final = _free_name(target / path.name)
            path.replace(final)
        except OSError as exc:
            log.error("%s: cannot move %s to %s/: %r", self.name, path, to, exc)
            return path
        return final

    def _recover(self) -> list[_Taken]:
        """Files a previous run left in ``processing/`` (it stopped while decoding them):
        moved to ``failed/`` undecoded, and reported, so a crashing file is met only once."""
        processing = self.folder / PROCESSING
        if not processing.is_dir():
            return []
        found = []
        for path in sorted(processing.iterdir()):
            if not path.is_file():
                continue
            key = _key_or_none(path)
            error = (
                f"{path.name}: an earlier run stopped while decoding this file (a decoder "
                f"may have crashed or exhausted memory); not decoded again, moved to {FAILED}/"
            )
            log.error("%s: %s", self.name, error)
            self.failed += 1
            image = ScanImage(
                hawb=key.hawb if key else "",
                tracking_id=key.tracking_id if key else None,
                source=f"{self.name}:{path.name}",
                received_at=self.clock.now(),
                pixels=None,
                error=error,
            )
            found.append(_Taken(image, None, Fault.INTERRUPTED, self._move(path, FAILED)))
        return found


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _free_name(path: Path) -> Path:
    """``path``, or ``name.1.ext``, ``name.2.ext`` … if taken, so nothing is overwritten."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
    return candidate
