"""DICOM network intake: a Storage SCP (pynetdicom) that scanners push images to (C-STORE).

Accepts the DICOS image storage SOP classes and pynetdicom's standard storage classes.
Each received dataset is checked against the intake's :class:`ImageLimits` (its encoded size,
then Rows × Columns × frames from the header) and only then decoded, on pynetdicom's
association thread; the image is handed to the matcher on the event loop. The C-STORE answer
tells the scanner what happened: Success when the image was read; 0xA700 (Refused: Out of
Resources) when it is over a limit; 0xA900 (dataset does not match SOP class) when its pixel
data are missing or undecodable; 0xC000 when the dataset cannot be parsed; 0x0110
(Processing Failure) if decoding raised anything else. In every failure with a key the parcel
goes to inspection with the reason, the image is quarantined, and the SCP keeps serving.
Calling AE titles can be restricted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt, sop_class
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import ThreadedAssociationServer

from controller.core.clock import Clock, MonotonicClock
from controller.core.ports import ScanImage
from controller.intake.dicom import decode_dataset
from controller.intake.faults import DEFAULT_LIMITS, Fault
from controller.intake.matcher import ImageMatcher
from controller.intake.settings import ImageLimits
from controller.intake.threat_report import DicomReferences

log = logging.getLogger(__name__)


def _register_dicos() -> None:
    """pynetdicom 3.0 does not know the DICOS SOP classes; teach it them (idempotent)."""
    for uid, keyword in DICOS_STORAGE.items():
        if not hasattr(sop_class, keyword):
            sop_class.register_uid(uid, keyword, StorageServiceClass)


DICOS_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.501.1": "DICOSCTImageStorage",
    "1.2.840.10008.5.1.4.1.1.501.2.1": "DICOSDigitalXRayImageStorageForPresentation",
    "1.2.840.10008.5.1.4.1.1.501.2.2": "DICOSDigitalXRayImageStorageForProcessing",
    "1.2.840.10008.5.1.4.1.1.501.4": "DICOS2DAITStorage",
}
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
NOT_MATCHING_SOP_CLASS = 0xA900
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110


class DicomStorageScp:
    """A C-STORE SCP on ``bind:port`` (port 0 picks a free one; see :attr:`port`)."""

    def __init__(
        self,
        matcher: ImageMatcher,
        *,
        ae_title: str = "CARGOGATE",
        port: int = 11112,
        bind: str = "0.0.0.0",
        allowed_calling_aes: Sequence[str] = (),
        line: str | None = None,
        name: str = "dicom_scp",
        references: DicomReferences | None = None,
        clock: Clock | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.matcher = matcher
        self.limits = limits
        self.ae_title = ae_title
        self.bind = bind
        self.port = port
        self.allowed_calling_aes = tuple(allowed_calling_aes)
        self.line = line
        self.name = name
        self.references = references
        self.clock: Clock = clock or MonotonicClock()
        self.received = 0
        self.rejected = 0
        self._server: ThreadedAssociationServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _register_dicos()
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax)
        for uid in DICOS_STORAGE:
            ae.add_supported_context(uid)
        if self.allowed_calling_aes:
            ae.require_calling_aet = list(self.allowed_calling_aes)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        server = await asyncio.to_thread(
            ae.start_server, (self.bind, self.port), block=False, evt_handlers=handlers
        )
        if server is None:
            raise RuntimeError(f"{self.name}: pynetdicom did not start a server")
        self._server = server
        self.port = int(server.server_address[1])
        log.info(
            "%s: DICOM storage SCP %s listening on %s:%d",
            self.name,
            self.ae_title,
            self.bind,
            self.port,
        )

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    def _on_store(self, event: Any) -> int:
        """Runs on pynetdicom's thread: check, decode, then hand over on the loop. Never
        raises: a handler exception would reach the scanner as an unexplained failure."""
        calling = _caller(event)
        try:
            return self._store(event, calling)
        except Exception as exc:  # MemoryError included: the SCP keeps serving
            self.rejected += 1
            log.exception("%s: C-STORE from %s failed", self.name, calling)
            image = ScanImage(
                hawb="",
                tracking_id=None,
                source=f"{self.name}:{calling}",
                received_at=self.clock.now(),
                error=f"C-STORE from {calling}: decoding raised {exc!r}",
            )
            self._deliver(image, Fault.DECODER_ERROR)
            return PROCESSING_FAILURE

    def _store(self, event: Any, calling: str) -> int:
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
        except Exception as exc:  # the payload could not even be parsed
            self.rejected += 1
            log.warning("%s: unparseable dataset from %s: %r", self.name, calling, exc)
            return CANNOT_UNDERSTAND
        decoded = decode_dataset(
            dataset,
            f"C-STORE from {calling}",
            self.limits,
            encoded_bytes=_received_bytes(event),
            what="dataset",
        )
        key = decoded.key
        error = decoded.error if decoded.pixels is None else None
        if key is None and decoded.pixels is not None:
            error = decoded.key_error
        image = ScanImage(
            hawb=key.hawb if key else "",
            tracking_id=key.tracking_id if key else None,
            source=f"{self.name}:{calling}:{decoded.reference.sop_instance_uid}",
            received_at=self.clock.now(),  # clocks are plain reads: safe from this thread
            pixels=decoded.pixels,
            error=error,
        )
        if self.references is not None and decoded.pixels is not None:
            self.references.remember(image, decoded.reference)
        self._deliver(image, decoded.fault if decoded.pixels is None else None)
        self.received += 1
        if decoded.pixels is None:
            self.rejected += 1
            log.warning("%s: %s", self.name, decoded.error)
            return OUT_OF_RESOURCES if decoded.fault is Fault.OVERSIZE else NOT_MATCHING_SOP_CLASS
        return SUCCESS

    def _deliver(self, image: ScanImage, fault: Fault | None) -> None:
        assert self._loop is not None
        deliver = functools.partial(self.matcher.deliver, image, self.line, fault=fault)
        self._loop.call_soon_threadsafe(deliver)


def _received_bytes(event: Any) -> int | None:
    """Size of the dataset as received (pynetdicom keeps it in a buffer), if known."""
    try:
        return len(event.request.DataSet.getbuffer())
    except (AttributeError, TypeError, ValueError):
        return None


def _caller(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return "unknown"
