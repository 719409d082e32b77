"""The DICOM Storage SCP on loopback: pushed by pynetdicom's SCU and by dcmtk's storescu
(an independent implementation), plus DICOS threat reports written back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from controller.core.domain import XrayResult, XrayStatus
from controller.core.ports import ScanImage
from controller.intake.dicom import decode_dataset
from controller.intake.dicom_scp import NOT_MATCHING_SOP_CLASS, SUCCESS, DicomStorageScp
from controller.intake.matcher import ImageMatcher
from controller.intake.quarantine import Quarantine
from controller.intake.threat_report import TDR_SOP_CLASS, DicomReferences, ThreatReportWriter
from tests.imaging.dicom import DICOS_DX_PROCESSING, dicos_image, write_dicos
from tests.imaging.images import parcel_image

WAIT = 20.0
STORESCU = shutil.which("storescu")


@contextlib.asynccontextmanager
async def scp(
    tmp_path: Path, allowed: tuple[str, ...] = ()
) -> AsyncIterator[tuple[DicomStorageScp, ImageMatcher]]:
    matcher = ImageMatcher(Quarantine(tmp_path / "q"))
    server = DicomStorageScp(
        matcher,
        port=0,
        bind="127.0.0.1",
        allowed_calling_aes=allowed,
        references=DicomReferences(),
    )
    await server.start()
    matcher_task = asyncio.create_task(matcher.run())
    try:
        yield server, matcher
    finally:
        matcher_task.cancel()
        await asyncio.gather(matcher_task, return_exceptions=True)
        await server.close()


def push(port: int, ds: Dataset, calling: str = "SCANNER1") -> int | None:
    """C-STORE ``ds`` with pynetdicom's SCU; the status, or None if not associated."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CARGOGATE")
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if status else None
    finally:
        assoc.release()


async def test_pynetdicom_scu_pushes_an_image_that_reaches_its_parcel(tmp_path: Path) -> None:
    raw = parcel_image(level=1.0)
    async with scp(tmp_path) as (server, matcher):
        status = await asyncio.to_thread(push, server.port, dicos_image(raw, ooi_id="CG200"))
        image = await asyncio.wait_for(matcher.image_for("L1", 1, "CG200"), WAIT)
    assert status == SUCCESS
    np.testing.assert_array_equal(image.pixels, raw)
    assert image.source.startswith("dicom_scp:SCANNER1:")


async def test_missing_pixel_data_is_refused_to_the_scanner_and_reported_to_the_parcel(
    tmp_path: Path,
) -> None:
    async with scp(tmp_path) as (server, matcher):
        status = await asyncio.to_thread(push, server.port, dicos_image(None, ooi_id="CG201"))
        image = await asyncio.wait_for(matcher.image_for("L1", 1, "CG201"), WAIT)
        # the SCP keeps serving after a bad dataset
        again = await asyncio.to_thread(
            push, server.port, dicos_image(parcel_image(), ooi_id="CG202")
        )
        assert (await matcher.image_for("L1", 2, "CG202")).pixels is not None
    assert status == NOT_MATCHING_SOP_CLASS
    assert image.pixels is None
    assert "no pixel data" in (image.error or "")
    assert again == SUCCESS


async def test_calling_ae_titles_can_be_restricted(tmp_path: Path) -> None:
    async with scp(tmp_path, allowed=("SCANNER1",)) as (server, matcher):
        ds = dicos_image(parcel_image(), ooi_id="CG203")
        refused = await asyncio.to_thread(push, server.port, ds, "INTRUDER")
        accepted = await asyncio.to_thread(push, server.port, ds, "SCANNER1")
    assert refused is None
    assert accepted == SUCCESS
    assert matcher.delivered == 1


@pytest.mark.skipif(
    STORESCU is None, reason="dcmtk's storescu is not installed (apt-get install dcmtk)"
)
async def test_dcmtk_storescu_pushes_dicos_files(tmp_path: Path) -> None:
    raw = parcel_image(level=1.0)
    good = write_dicos(tmp_path / "good.dcm", dicos_image(raw, ooi_id="CG300"))
    dual = np.stack([raw, raw // 2])
    two = write_dicos(tmp_path / "dual.dcm", dicos_image(dual, ooi_id="CG301"))
    async with scp(tmp_path, allowed=("SCANNER7",)) as (server, matcher):
        process = await asyncio.create_subprocess_exec(
            str(STORESCU),
            "-aet", "SCANNER7",
            "-aec", "CARGOGATE",
            "-R",  # propose only the SOP classes of the files sent
            "127.0.0.1",
            str(server.port),
            str(good),
            str(two),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), WAIT)
        first = await asyncio.wait_for(matcher.image_for("L1", 1, "CG300"), WAIT)
        second = await asyncio.wait_for(matcher.image_for("L1", 2, "CG301"), WAIT)
    assert process.returncode == 0, output.decode(errors="replace")
    np.testing.assert_array_equal(first.pixels, raw)
    np.testing.assert_array_equal(second.pixels, dual)
    assert first.source.startswith("dicom_scp:SCANNER7:")


async def test_threat_report_is_written_for_a_dicos_image(tmp_path: Path) -> None:
    async with scp(tmp_path) as (server, matcher):
        sent = dicos_image(parcel_image(), ooi_id="CG400")
        await asyncio.to_thread(push, server.port, sent)
        image = await asyncio.wait_for(matcher.image_for("L1", 1, "CG400"), WAIT)
        assert server.references is not None
        writer = ThreatReportWriter(
            tmp_path / "tdr", server.references, {"firearm": 0.3, "blade": 0.35}
        )
        scores = {"firearm": 0.91, "blade": 0.02}
        writer(image, XrayResult(XrayStatus.OK, scores, "abc123"))
        await writer.drain()
    (path,) = (tmp_path / "tdr").glob("*.dcm")
    report = pydicom.dcmread(path)
    assert report.SOPClassUID == TDR_SOP_CLASS
    assert report.PatientID == "CG400"
    assert report.StudyInstanceUID == sent.StudyInstanceUID
    assert report.ReferencedImageSequence[0].ReferencedSOPInstanceUID == sent.SOPInstanceUID
    assert report.ReferencedImageSequence[0].ReferencedSOPClassUID == DICOS_DX_PROCESSING
    assert list(report.ThreatDetectionAlgorithmAndVersion) == ["CargoGate ONNX", "abc123"]
    assert report.AlarmDecision == "ALARM"
    assert report.NumberOfAlarmObjects == 1
    assessed = {
        item.ATDAssessmentSequence[0].ThreatCategoryDescription: item.ATDAssessmentSequence[0]
        for item in report.ThreatSequence
    }
    assert assessed["firearm"].ATDAssessmentFlag == "THREAT"
    assert assessed["blade"].ATDAssessmentFlag == "NO_THREAT"
    assert assessed["firearm"].ATDAssessmentProbability == pytest.approx(0.91)


async def test_failed_inference_gives_an_aborted_threat_report(tmp_path: Path) -> None:
    refs = DicomReferences()
    writer = ThreatReportWriter(tmp_path / "tdr", refs, {})
    decoded = decode_dataset(dicos_image(parcel_image(), ooi_id="CG401"), "test")
    image = ScanImage("CG401", None, "x", 1.0, decoded.pixels)
    refs.remember(image, decoded.reference)
    writer(image, XrayResult.fault(XrayStatus.FAILED, "model run failed"))
    await writer.drain()
    writer(image, XrayResult.fault(XrayStatus.FAILED, "again"))  # reference used once
    await writer.drain()
    (path,) = (tmp_path / "tdr").glob("*.dcm")
    report = pydicom.dcmread(path)
    assert (report.AbortFlag, report.AlarmDecision) == ("ABORT", "UNKNOWN")
    assert writer.written == 1
