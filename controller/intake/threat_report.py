"""DICOS Threat Detection Reports (TDR) for images that came in as DICOS/DICOM.

A faithful *minimal subset* of a DICOS TDR: the SOP class, study and OOI identity copied from
the image, the algorithm and model version, the overall alarm decision, and one potential
threat object per scored class carrying its probability. It omits what an image-level
classifier cannot give (threat regions, bounding boxes, bitmaps) and the equipment and
operator modules. Reports are written as files to a folder; the controller's own audit
record of the result is kept by the core either way.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from controller.core.domain import XrayResult, XrayStatus
from controller.core.ports import ScanImage
from controller.intake.dicom import DicomReference

log = logging.getLogger(__name__)

TDR_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.501.3")
ALGORITHM = "CargoGate ONNX"
#: Our mapping of model classes to DICOS threat categories; others are reported as ANOMALY.
CATEGORIES = {
    "firearm": "PROHIBITED_ITEM",
    "blade": "PROHIBITED_ITEM",
    "narcotics_organic": "CONTRABAND",
    "lithium_battery": "ANOMALY",
    "liquid_container": "ANOMALY",
}


class DicomReferences:
    """Remembers the DICOM identity of recently received images until their result comes.

    Keyed by (source, HAWB or tracking id, received_at), bounded to ``capacity`` entries.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._refs: OrderedDict[tuple[str, str, float], DicomReference] = OrderedDict()

    def remember(self, image: ScanImage, reference: DicomReference) -> None:
        self._refs[_key(image)] = reference
        while len(self._refs) > self.capacity:
            self._refs.popitem(last=False)

    def pop(self, image: ScanImage) -> DicomReference | None:
        return self._refs.pop(_key(image), None)


def _key(image: ScanImage) -> tuple[str, str, float]:
    return (image.source, image.hawb or f"tid-{image.tracking_id}", image.received_at)


def threat_report(
    reference: DicomReference,
    result: XrayResult,
    alarm_thresholds: Mapping[str, float],
    now: datetime.datetime | None = None,
) -> Dataset:
    """Build the TDR dataset for one image's result."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y%m%d%H%M%S.%f")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = TDR_SOP_CLASS
    ds.SOPClassUID = TDR_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "TDR"
    ds.StudyInstanceUID = reference.study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = stamp[:8], stamp[8:]
    ds.PatientID = reference.patient_id
    ds.AccessionNumber = reference.accession_number
    ds.TDRType = "MACHINE"
    ds.ThreatDetectionAlgorithmAndVersion = [ALGORITHM, result.model_version or "none"]
    ds.AlarmDecisionTime = stamp
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = reference.sop_class_uid
    referenced.ReferencedSOPInstanceUID = reference.sop_instance_uid
    ds.ReferencedImageSequence = Sequence([referenced])
    if result.status is not XrayStatus.OK:
        ds.AbortFlag = "ABORT"
        ds.AbortReason = "OTHER"
        ds.AlarmDecision = "UNKNOWN"
        ds.NumberOfAlarmObjects = 0
        ds.ThreatSequence = Sequence([])
        return ds
    ds.AbortFlag = "SUCCESS"
    threats = []
    alarms = 0
    for number, (name, score) in enumerate(sorted(result.scores.items()), start=1):
        alarmed = score >= alarm_thresholds.get(name, 1.0)
        alarms += alarmed
        assessment = Dataset()
        assessment.ThreatCategory = CATEGORIES.get(name, "ANOMALY")
        assessment.ThreatCategoryDescription = name
        assessment.ATDAbilityAssessment = "NO_INTERFERENCE"
        assessment.ATDAssessmentFlag = "THREAT" if alarmed else "NO_THREAT"
        assessment.ATDAssessmentProbability = float(score)
        item = Dataset()
        item.PotentialThreatObjectID = number
        item.ATDAssessmentSequence = Sequence([assessment])
        threats.append(item)
    ds.ThreatSequence = Sequence(threats)
    ds.NumberOfAlarmObjects = alarms
    ds.AlarmDecision = "ALARM" if alarms else "CLEAR"
    return ds


class ThreatReportWriter:
    """A result listener for the inference service: writes a TDR file per DICOS image."""

    def __init__(
        self, folder: Path, references: DicomReferences, alarm_thresholds: Mapping[str, float]
    ) -> None:
        self.folder = folder
        self.references = references
        self.alarm_thresholds = dict(alarm_thresholds)
        self.written = 0
        self._pending: set[asyncio.Future[None]] = set()

    def __call__(self, image: ScanImage, result: XrayResult) -> None:
        reference = self.references.pop(image)
        if reference is None:
            return  # not a DICOM image: nothing to report in DICOS
        ds = threat_report(reference, result, self.alarm_thresholds)
        name = f"TDR_{image.hawb or f'tid-{image.tracking_id}'}_{ds.SOPInstanceUID}.dcm"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save(ds, name)
            return
        task = loop.run_in_executor(None, self._save, ds, name)  # file I/O off the loop
        self._pending.add(task)
        task.add_done_callback(self._saved)

    async def drain(self) -> None:
        """Wait for reports still being written."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _save(self, ds: Dataset, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.part"
        ds.save_as(partial, enforce_file_format=True)
        partial.replace(self.folder / name)
        self.written += 1

    def _saved(self, task: asyncio.Future[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("threat report could not be written to %s: %r", self.folder, exc)
