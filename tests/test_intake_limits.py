"""Image limits and faults at intake: a decompression bomb, an oversize header, a damaged
file or a decoder that raises is quarantined with its reason and an alarm, the parcel gets
``bad_image``, and the watch folder and the Storage SCP keep serving.

Every bomb here is a real file a decoder accepts (see :mod:`tests.imaging.bombs`); memory
is measured in a child process so that the figure is this decode's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pynetdicom import AE

from controller.alarms import Alarms
from controller.core.domain import XrayStatus
from controller.core.ports import ScanImage
from controller.inference.factory import build_onnx_xray
from controller.inference.settings import OnnxXray
from controller.intake.dicom import read_dicom_file
from controller.intake.dicom_scp import SUCCESS, DicomStorageScp
from controller.intake.factory import IntakeParts, build_intake
from controller.intake.faults import DEFAULT_LIMITS
from controller.intake.folder import DONE, FAILED, Decoded, FolderSource, decoder
from controller.intake.matcher import ImageMatcher
from controller.intake.quarantine import Quarantine
from controller.intake.readers import ImageReadError, read_image_file
from controller.intake.settings import DicomFolderIntake, Intake, WatchFolderIntake
from tests.imaging.bombs import (
    dicom_header_bomb,
    dicom_rle_bomb,
    header_bomb_dataset,
    jpeg_header,
    png_bomb,
    sparse_npy,
    tiff_bomb,
)
from tests.imaging.dicom import dicos_image, write_dicos
from tests.imaging.images import parcel_image
from tests.imaging.models import build_model

WAIT = 15.0
MiB = 1024 * 1024


def png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def truncated_png(path: Path) -> Path:
    png(path, parcel_image(level=1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_tiff(path: Path) -> Path:
    tifffile.imwrite(path, parcel_image(level=1.0))
    data = bytearray(path.read_bytes())
    data[4:8] = (len(data) + 4096).to_bytes(4, "little")  # first IFD points past the end
    path.write_bytes(bytes(data))
    return path


# --- settings ----------------------------------------------------------------------------------


def test_limits_have_defaults_and_accept_sizes_with_units() -> None:
    intake = Intake.model_validate({"sources": [{"type": "inprocess"}]})
    limits = intake.limits
    assert limits.max_pixels == 64_000_000
    assert limits.max_file_bytes == 256 * MiB
    assert limits.max_decoded_bytes == 256 * MiB
    custom = Intake.model_validate(
        {
            "sources": [{"type": "inprocess"}],
            "limits": {"max_pixels": 1_000_000, "max_file_bytes": "8 MiB"},
        }
    )
    assert custom.limits.max_pixels == 1_000_000
    assert custom.limits.max_file_bytes == 8 * MiB


@pytest.mark.parametrize(
    ("limits", "field", "value"),
    [
        ({"max_pixels": 0}, "max_pixels", "0"),
        ({"max_pixels": -5}, "max_pixels", "-5"),
        ({"max_file_bytes": "lots"}, "max_file_bytes", "lots"),
        ({"max_decoded_bytes": 0}, "max_decoded_bytes", "0"),
        ({"max_bytes": 5}, "max_bytes", "5"),
    ],
)
def test_bad_limits_name_the_field_and_the_value(
    limits: dict[str, object], field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Intake.model_validate({"sources": [{"type": "inprocess"}], "limits": limits})
    (error,) = info.value.errors()
    assert error["loc"] == ("limits", field)
    assert str(error["input"]) == value


# --- readers: refused from the header -----------------------------------------------------------


Maker = Callable[[Path], Path]
BOMBS: dict[str, tuple[str, Maker, tuple[str, ...]]] = {
    # name: (file name, how to make it, what the reason must say: the limit and the value)
    "png 20000x20000 (388 KB)": (
        "BOMB1.png",
        lambda p: png_bomb(p, 20000, 20000),
        ("max_pixels=64,000,000", "20000×20000"),
    ),
    "png 12000x12000 (Pillow only warns)": (
        "BOMB2.png",
        lambda p: png_bomb(p, 12000, 12000),
        ("max_pixels=64,000,000", "12000×12000"),
    ),
    "16-bit png over the pixels": (
        "BOMB3.png",
        lambda p: png_bomb(p, 12000, 7000, bit_depth=16),
        ("max_pixels=64,000,000", "12000×7000"),
    ),
    "tiff stack over the decoded bytes": (
        "BOMB7.tif",
        lambda p: tiff_bomb(p, 8000, 8000, planes=3),
        ("max_decoded_bytes=268,435,456", "384,000,000"),
    ),
    "jpeg named .png, 12000x12000 (Pillow only warns)": (
        "BOMB8.png",
        lambda p: jpeg_header(p, 12000, 12000),
        ("max_pixels=64,000,000", "12000×12000"),
    ),
    "jpeg named .png, over Pillow's own limit": (
        "BOMB9.png",
        lambda p: jpeg_header(p, 20000, 20000),
        ("max_pixels=64,000,000", "400000000 pixels"),
    ),
    "tiled zlib tiff 12000x12000": (
        "BOMB4.tif",
        lambda p: tiff_bomb(p, 12000, 12000),
        ("max_pixels=64,000,000", "12000×12000"),
    ),
    "npy of 300 MB": (
        "BOMB5.npy",
        lambda p: sparse_npy(p, (10000, 15000)),
        ("max_file_bytes=268,435,456", "300,000,128"),
    ),
    "npy header over the pixels": (
        "BOMB6.npy",
        lambda p: sparse_npy(p, (9000, 9000), np.uint8),
        ("max_pixels=64,000,000", "9000×9000"),
    ),
}
DICOM_BOMBS: dict[str, tuple[str, Maker, tuple[str, ...]]] = {
    "dicom rows x columns": (
        "bomb1.dcm",
        lambda p: dicom_header_bomb(p, 60000, 60000, ooi_id="CG901"),
        ("max_pixels=64,000,000", "60000×60000"),
    ),
    "dicom rle 12000x12000 (4.5 MB)": (
        "bomb2.dcm",
        lambda p: dicom_rle_bomb(p, 12000, 12000, ooi_id="CG902"),
        ("max_pixels=64,000,000", "12000×12000"),
    ),
    "dicom frames over the decoded bytes": (
        "bomb3.dcm",
        lambda p: dicom_header_bomb(p, 4000, 4000, ooi_id="CG903", frames=20),
        ("max_decoded_bytes=268,435,456", "640,000,000"),
    ),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_oversize_image_files_are_refused_from_the_header(tmp_path: Path, case: str) -> None:
    name, make, says = BOMBS[case]
    path = make(tmp_path / name)
    with pytest.raises(ImageReadError) as info:
        read_image_file(path)
    assert name in str(info.value)
    for words in says:
        assert words in str(info.value)


@pytest.mark.parametrize("case", list(DICOM_BOMBS))
def test_oversize_dicom_files_are_refused_from_the_header_with_their_key(
    tmp_path: Path, case: str
) -> None:
    name, make, says = DICOM_BOMBS[case]
    image = read_dicom_file(make(tmp_path / name))
    assert image.pixels is None
    assert image.key is not None
    assert image.key.hawb.startswith("CG90")
    for words in (name, *says):
        assert words in (image.error or "")


def test_a_dicom_file_over_the_byte_limit_is_not_read_but_keeps_its_key(tmp_path: Path) -> None:
    raw = parcel_image(level=1.0, height=600, width=500)
    path = write_dicos(tmp_path / "big.dcm", dicos_image(raw, ooi_id="CG904"))
    small = Intake.model_validate(
        {"sources": [{"type": "inprocess"}], "limits": {"max_file_bytes": 100_000}}
    )
    image = read_dicom_file(path, small.limits)
    assert image.pixels is None
    assert image.key is not None
    assert image.key.hawb == "CG904"
    assert f"{path.stat().st_size:,} bytes" in (image.error or "")
    assert "max_file_bytes=100,000" in (image.error or "")


_MEASURE = """
import json, resource, sys
from pathlib import Path
from controller.intake.dicom import read_dicom_file
from controller.intake.readers import ImageReadError, read_image_file

def read(path):
    try:
        if path.suffix == ".dcm":
            return read_dicom_file(path).error
        read_image_file(path)
        return None
    except ImageReadError as exc:
        return str(exc)

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

warm, *bombs = (Path(p) for p in sys.argv[1:])
for path in warm.iterdir():  # imports, plugins and caches: not what is measured
    read(path)
before = peak_mb()
errors = {path.name: read(path) for path in bombs}
print(json.dumps({"growth_mb": peak_mb() - before, "errors": errors}))
"""


def test_bombs_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    warm.mkdir()
    raw = parcel_image(level=1.0)
    png(warm / "w.png", raw)
    tifffile.imwrite(warm / "w.tif", raw)
    np.save(warm / "w.npy", raw)
    write_dicos(warm / "w.dcm", dicos_image(raw, ooi_id="W1"))
    dicom_rle_bomb(warm / "w2.dcm", 64, 64, ooi_id="W2")
    bombs = [
        png_bomb(tmp_path / "a.png", 20000, 20000),
        png_bomb(tmp_path / "b.png", 12000, 12000),  # decoded in full before: 462 MB
        tiff_bomb(tmp_path / "c.tif", 12000, 12000),
        sparse_npy(tmp_path / "d.npy", (10000, 15000)),
        dicom_rle_bomb(tmp_path / "e.dcm", 12000, 12000, ooi_id="CG1"),
    ]
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(warm), *map(str, bombs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    result = json.loads(run.stdout)
    assert all(result["errors"].values()), result["errors"]
    assert result["growth_mb"] < 100, result


# --- the watch folder: never fatal, out of the inbox, quarantined, alarmed ----------------------


@contextlib.asynccontextmanager
async def running(parts: IntakeParts) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(parts.matcher.run())]
    folders = [s for s in parts.sources.values() if isinstance(s, FolderSource)]
    tasks += [asyncio.create_task(s.run()) for s in folders]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def folder_intake(
    tmp_path: Path, alarms: Alarms | None = None, *, dicom: bool = False
) -> tuple[IntakeParts, FolderSource, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = (
        DicomFolderIntake(type="dicom_folder", path=inbox, poll_s=0.05, settle_s=0)
        if dicom
        else WatchFolderIntake(type="watch_folder", path=inbox, poll_s=0.05, settle_s=0)
    )
    parts = build_intake(
        Intake(sources=[source], quarantine=tmp_path / "q", hold_s=60), alarms=alarms
    )
    (folder,) = parts.sources.values()
    assert isinstance(folder, FolderSource)
    return parts, folder, inbox


def in_inbox(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if p.is_file())


async def test_a_bomb_in_the_watch_folder_is_quarantined_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    alarms = Alarms(None, time.monotonic)
    parts, folder, inbox = folder_intake(tmp_path, alarms)
    matcher = parts.matcher
    raw = parcel_image(level=1.0)
    png_bomb(inbox / "BOMB1.png", 20000, 20000)
    png_bomb(inbox / "BOMB2.png", 12000, 12000)
    sparse_npy(inbox / "BOMB3.npy", (9000, 9000), np.uint8)
    truncated_png(inbox / "CUT1.png")
    corrupt_tiff(inbox / "CUT2.tif")
    png(inbox / "GOOD1.png", raw)
    async with running(parts) as tasks:
        good = await asyncio.wait_for(matcher.image_for("L1", 1, "GOOD1"), WAIT)
        await asyncio.wait_for(matcher.wait_quarantined(5), WAIT)
        cycles = folder.polls
        await asyncio.sleep(0.5)  # several more polls with the bombs gone
        assert folder.polls >= cycles + 3
        assert not any(task.done() for task in tasks)
        np.save(inbox / "GOOD2.npy", raw)  # and the folder is still served
        later = await asyncio.wait_for(matcher.image_for("L1", 2, "GOOD2"), WAIT)
    np.testing.assert_array_equal(good.pixels, raw)
    assert later.pixels is not None
    assert in_inbox(inbox) == []
    assert sorted(p.name for p in (inbox / FAILED).iterdir()) == [
        "BOMB1.png",
        "BOMB2.png",
        "BOMB3.npy",
        "CUT1.png",
        "CUT2.tif",
    ]
    assert sorted(p.name for p in (inbox / DONE).iterdir()) == ["GOOD1.png", "GOOD2.npy"]
    entries = {e.hawb: e for e in Quarantine(tmp_path / "q").entries()}
    assert sorted(entries) == ["BOMB1", "BOMB2", "BOMB3", "CUT1", "CUT2"]
    assert "max_pixels=64,000,000" in entries["BOMB1"].reason
    assert "20000×20000" in entries["BOMB1"].reason
    assert "12000×12000" in entries["BOMB2"].reason
    assert "9000×9000" in entries["BOMB3"].reason
    assert "corrupt or truncated" in entries["CUT1"].reason
    assert "TIFF is corrupt" in entries["CUT2"].reason
    assert entries["BOMB1"].file == inbox / FAILED / "BOMB1.png"
    raised = [source for _, source, _, active in alarms.history if active]
    assert raised.count("intake/image_oversize") == 1  # once per condition, not per file
    assert raised.count("intake/image_unreadable") == 1
    assert "intake/image_oversize" in alarms.active


async def test_the_parcel_of_a_bomb_gets_bad_image_and_the_next_is_scored(
    tmp_path: Path,
) -> None:
    parts, _, inbox = folder_intake(tmp_path)
    model = build_model(tmp_path / "m.onnx")
    settings = OnnxXray(type="onnx", model=model, image_wait_s=WAIT, timeout_s=5.0)
    xray = build_onnx_xray(settings, parts.matcher)
    png_bomb(inbox / "CG1.png", 20000, 20000)
    async with xray, running(parts):
        result = await xray.analyse("L1", 1, "CG1")
        np.save(inbox / "CG2.npy", parcel_image(level=1.0))
        after = await xray.analyse("L1", 2, "CG2")
    assert result.status is XrayStatus.BAD_IMAGE
    assert "CG1.png" in result.detail
    assert "max_pixels=64,000,000" in result.detail
    assert after.status is XrayStatus.OK


async def test_oversize_dicom_files_reach_their_parcel_by_ooi_id(tmp_path: Path) -> None:
    parts, _, inbox = folder_intake(tmp_path, dicom=True)
    for name, make, _ in DICOM_BOMBS.values():
        make(inbox / name)
    raw = parcel_image(level=1.0)
    write_dicos(inbox / "good.dcm", dicos_image(raw, ooi_id="CG905"))
    async with running(parts):
        bad = [
            await asyncio.wait_for(parts.matcher.image_for("L1", n, f"CG90{n}"), WAIT)
            for n in (1, 2, 3)
        ]
        good = await asyncio.wait_for(parts.matcher.image_for("L1", 5, "CG905"), WAIT)
        await asyncio.wait_for(parts.matcher.wait_quarantined(3), WAIT)
    assert all(image.pixels is None for image in bad)
    assert "60000×60000" in (bad[0].error or "")
    np.testing.assert_array_equal(good.pixels, raw)
    assert in_inbox(inbox) == []
    reasons = {e.hawb: e.reason for e in Quarantine(tmp_path / "q").entries()}
    assert sorted(reasons) == ["CG901", "CG902", "CG903"]
    for n, (name, _, says) in enumerate(DICOM_BOMBS.values(), start=1):
        assert reasons[f"CG90{n}"].startswith(f"image over the intake limits: {name}: ")
        assert all(words in reasons[f"CG90{n}"] for words in says)


async def test_a_file_left_in_processing_by_a_crash_is_not_decoded_again(
    tmp_path: Path,
) -> None:
    alarms = Alarms(None, time.monotonic)
    parts, _, inbox = folder_intake(tmp_path, alarms)
    (inbox / "processing").mkdir()
    png(inbox / "processing" / "CG7.png", parcel_image())  # a file the last run died on
    async with running(parts):
        image = await asyncio.wait_for(parts.matcher.image_for("L1", 7, "CG7"), WAIT)
        await asyncio.wait_for(parts.matcher.wait_quarantined(1), WAIT)
    assert image.pixels is None
    assert "stopped while decoding" in (image.error or "")
    assert [p.name for p in (inbox / FAILED).iterdir()] == ["CG7.png"]
    assert list((inbox / "processing").iterdir()) == []
    assert "intake/decode_interrupted" in alarms.active


async def test_a_file_that_cannot_leave_the_inbox_is_neither_decoded_nor_retried_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Claiming moves a file out of the inbox before decoding; if that fails (here a plain
    file sits where ``processing/`` belongs) the file is skipped, once, until it changes."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "processing").write_text("in the way")
    matcher = ImageMatcher(Quarantine(tmp_path / "q"))
    source = FolderSource(inbox, matcher, decoder(False, DEFAULT_LIMITS), patterns=["*.npy"])
    source.settle_s = 0
    np.save(inbox / "CG10.npy", parcel_image())
    handed = [await source.poll_once() for _ in range(4)]
    assert handed == [0, 0, 0, 0]
    assert matcher.delivered == 0
    assert in_inbox(inbox) == ["CG10.npy", "processing"]
    assert caplog.text.count("cannot move") == 1
    (inbox / "processing").unlink()
    np.save(inbox / "CG10.npy", parcel_image(seed=2))  # rewritten: tried again
    os.utime(inbox / "CG10.npy", ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    handed = [await source.poll_once() for _ in range(2)]
    assert handed == [0, 1]
    assert in_inbox(inbox) == []


async def test_a_decoder_that_raises_is_quarantined_and_never_fatal(tmp_path: Path) -> None:
    """A decoder bug (any exception, MemoryError included) is an answer for the parcel."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    alarms = Alarms(None, time.monotonic)
    matcher = ImageMatcher(Quarantine(tmp_path / "q"), alarms=alarms)

    def decode(path: Path) -> Decoded:
        if path.stem == "CG8":
            raise MemoryError("the decoder ran out of memory")
        return Decoded(None, None, "no key")

    source = FolderSource(inbox, matcher, decode, patterns=["*.png"], poll_s=0.05, settle_s=0)
    png(inbox / "CG8.png", parcel_image())
    tasks = [asyncio.create_task(matcher.run()), asyncio.create_task(source.run())]
    try:
        image = await asyncio.wait_for(matcher.image_for("L1", 8, "CG8"), WAIT)
        await asyncio.wait_for(matcher.wait_quarantined(1), WAIT)
        assert not any(task.done() for task in tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert image.pixels is None
    assert "MemoryError" in (image.error or "")
    assert (inbox / FAILED / "CG8.png").exists()
    assert "intake/decoder_error" in alarms.active


async def test_a_bad_image_is_quarantined_once_even_when_no_parcel_claims_it(
    tmp_path: Path,
) -> None:
    quarantine = Quarantine(tmp_path / "q")
    matcher = ImageMatcher(quarantine, hold_s=0.1)
    task = asyncio.create_task(matcher.run())
    try:
        matcher.deliver(ScanImage("CG9", None, "scanner", 0.0, None, "sensor readout failed"))
        await asyncio.wait_for(matcher.wait_quarantined(1), WAIT)
        await asyncio.sleep(0.5)  # well past hold_s: the sweep must not write it again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (entry,) = quarantine.entries()
    assert "sensor readout failed" in entry.reason
    assert matcher.held == 0


# --- the Storage SCP -----------------------------------------------------------------------------


def push(port: int, ds: Dataset) -> int | None:
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CARGOGATE")
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if status else None
    finally:
        assoc.release()


async def test_the_scp_refuses_a_huge_dataset_and_keeps_serving(tmp_path: Path) -> None:
    alarms = Alarms(None, time.monotonic)
    quarantine = Quarantine(tmp_path / "q")
    matcher = ImageMatcher(quarantine, alarms=alarms)
    server = DicomStorageScp(matcher, port=0, bind="127.0.0.1")
    await server.start()
    task = asyncio.create_task(matcher.run())
    try:
        huge = header_bomb_dataset(60000, 60000, ooi_id="CG950")
        refused = await asyncio.to_thread(push, server.port, huge)
        image = await asyncio.wait_for(matcher.image_for("L1", 1, "CG950"), WAIT)
        await asyncio.wait_for(matcher.wait_quarantined(1), WAIT)
        good = dicos_image(parcel_image(), ooi_id="CG951")
        accepted = await asyncio.to_thread(push, server.port, good)
        later = await asyncio.wait_for(matcher.image_for("L1", 2, "CG951"), WAIT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()
    assert refused == 0xA700  # Refused: Out of Resources
    assert image.pixels is None
    assert "max_pixels=64,000,000" in (image.error or "")
    assert "60000×60000" in (image.error or "")
    assert accepted == SUCCESS
    assert later.pixels is not None
    (entry,) = quarantine.entries()
    assert "image over the intake limits" in entry.reason
    assert "intake/image_oversize" in alarms.active
