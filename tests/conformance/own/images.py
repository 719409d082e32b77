"""The image source kits: CargoGate's intake sources, each built through its registered factory
from the kit's source context, with the scanner played for real: arrays pushed in process,
``.npy`` and damaged files written to a watch folder, DICOS files written to a DICOM folder, and
DICOS datasets pushed over the network to the Storage SCP by pynetdicom's SCU."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pynetdicom import AE

import controller.intake
from controller.conformance.harness import ImageContext
from controller.conformance.running import wait_for
from controller.intake.dicom_scp import DicomStorageScp
from controller.intake.factory import dicom_scp_source, folder_source, inprocess_source
from controller.intake.folder import FolderSource
from controller.intake.inprocess import InProcessScanner
from controller.intake.settings import (
    DicomFolderIntake,
    DicomScpIntake,
    InProcessIntake,
    WatchFolderIntake,
)
from tests.imaging.dicom import dicos_image, write_dicos

ADAPTERS = ("inprocess", "watch_folder", "dicom_folder", "dicom_scp")


@dataclass(frozen=True)
class ImageKit:
    """One of this project's intake sources, by its ``type`` key."""

    adapter: str

    @property
    def checklist(self) -> Path:
        home = Path(controller.intake.__file__).parent
        return home / f"images-{self.adapter}.conformance.toml"

    def open(
        self, ctx: ImageContext
    ) -> AbstractAsyncContextManager[InProcessHarness | FolderHarness | ScpHarness]:
        if self.adapter == "inprocess":
            return open_inprocess(ctx)
        if self.adapter == "dicom_scp":
            return open_scp(ctx)
        return open_folder(ctx, dicom=self.adapter == "dicom_folder")


def _write(path: Path, data: bytes | Dataset | Any) -> None:
    """Write under a name the source skips, then rename: a scanner's atomic hand-over."""
    partial = path.with_name(path.name + ".part")
    if isinstance(data, bytes):
        partial.write_bytes(data)
    elif isinstance(data, Dataset):
        write_dicos(partial, data)
    else:
        with partial.open("wb") as file:
            np.save(file, data, allow_pickle=False)
    partial.replace(path)


# --- in process ------------------------------------------------------------------------------


@dataclass
class InProcessHarness:
    source: InProcessScanner
    line: str | None = None

    async def send(self, hawb: str, pixels: Any) -> None:
        self.source.push(pixels, hawb=hawb)

    async def send_damaged(self, hawb: str) -> None:
        self.source.push(None, hawb=hawb, error="the detector's readout failed")

    async def send_keyless(self, pixels: Any) -> None:
        self.source.push(pixels)


@asynccontextmanager
async def open_inprocess(ctx: ImageContext) -> AsyncIterator[InProcessHarness]:
    yield InProcessHarness(inprocess_source(InProcessIntake(type="inprocess"), ctx.sources))


# --- watch folder and DICOM folder -----------------------------------------------------------


@dataclass
class FolderHarness:
    """A scanner writing into the folder: ``<HAWB>.npy`` (or, for DICOM, a DICOS file whose
    OOI ID is the HAWB, under a name that carries no key)."""

    source: FolderSource
    dicom: bool
    line: str | None = None
    names: itertools.count[int] = field(default_factory=itertools.count)

    async def send(self, hawb: str, pixels: Any) -> None:
        if self.dicom:
            path = self.source.folder / f"scan {next(self.names)}.dcm"
            await asyncio.to_thread(_write, path, dicos_image(pixels, ooi_id=hawb))
        else:
            await asyncio.to_thread(_write, self.source.folder / f"{hawb}.npy", pixels)

    async def send_damaged(self, hawb: str) -> None:
        suffix = "dcm" if self.dicom else "png"
        damaged = b"\x89PNG\r\n\x1a\n cut off by a failing disk"
        await asyncio.to_thread(_write, self.source.folder / f"{hawb}.{suffix}", damaged)

    async def send_keyless(self, pixels: Any) -> None:
        path = self.source.folder / f"scan {next(self.names)}.{'dcm' if self.dicom else 'npy'}"
        await asyncio.to_thread(_write, path, dicos_image(pixels) if self.dicom else pixels)


@asynccontextmanager
async def open_folder(ctx: ImageContext, *, dicom: bool) -> AsyncIterator[FolderHarness]:
    inbox = ctx.folder / "inbox"
    inbox.mkdir()
    settings: WatchFolderIntake | DicomFolderIntake
    if dicom:
        settings = DicomFolderIntake(type="dicom_folder", path=inbox, poll_s=0.05, settle_s=0)
    else:
        settings = WatchFolderIntake(type="watch_folder", path=inbox, poll_s=0.05, settle_s=0)
    yield FolderHarness(folder_source(settings, ctx.sources), dicom)


# --- DICOM Storage SCP -----------------------------------------------------------------------


def _store(port: int, dataset: Dataset) -> int | None:
    """C-STORE ``dataset`` with pynetdicom's SCU; the status, or None if not associated."""
    ae = AE(ae_title="KITSCANNER")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title="CARGOGATE")
    if not association.is_established:
        return None
    try:
        status = association.send_c_store(dataset)
        return int(status.Status) if status else None
    finally:
        association.release()


@dataclass
class ScpHarness:
    """A scanner pushing DICOS datasets to the SCP (OOI ID = HAWB); a damaged one has no pixel
    data, and the SCP says so to the scanner as well as to the parcel."""

    source: DicomStorageScp
    line: str | None = None

    async def _push(self, dataset: Dataset) -> None:
        await wait_for(lambda: self.source.port != 0, "the SCP listening")
        status = await asyncio.to_thread(_store, self.source.port, dataset)
        assert status is not None, "the scanner could not associate with the SCP"

    async def send(self, hawb: str, pixels: Any) -> None:
        await self._push(dicos_image(pixels, ooi_id=hawb))

    async def send_damaged(self, hawb: str) -> None:
        await self._push(dicos_image(None, ooi_id=hawb))

    async def send_keyless(self, pixels: Any) -> None:
        await self._push(dicos_image(pixels))


@asynccontextmanager
async def open_scp(ctx: ImageContext) -> AsyncIterator[ScpHarness]:
    settings = DicomScpIntake(type="dicom_scp", port=0, bind="127.0.0.1")
    yield ScpHarness(dicom_scp_source(settings, ctx.sources))
