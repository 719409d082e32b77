"""Scanner intake from files: naming, readers, the watch folder, DICOS files, the matcher,
and the quarantine for images no parcel claims."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from controller.alarms import Alarms
from controller.core.ports import ScanImage
from controller.intake.dicom import read_dicom_file
from controller.intake.factory import build_intake
from controller.intake.folder import DONE, FAILED, FolderSource, decode_image_file
from controller.intake.matcher import ImageMatcher
from controller.intake.naming import ImageKey, NamingError, key_from_filename, parse_key
from controller.intake.quarantine import Quarantine
from controller.intake.readers import ImageReadError, read_image_file
from controller.intake.settings import (
    DicomFolderIntake,
    InProcessIntake,
    Intake,
    WatchFolderIntake,
)
from tests.imaging.dicom import dicos_image, write_dicos
from tests.imaging.images import parcel_image

WAIT = 20.0  # generous: the machine is shared


def png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path, format="PNG")
    return path


# --- naming ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("CG000000042.png", ImageKey(hawb="CG000000042")),
        ("CG000000042__top_view.tif", ImageKey(hawb="CG000000042")),
        ("AB-123.npy", ImageKey(hawb="AB-123")),
        ("tid-4294967295__low.npy", ImageKey(tracking_id=4294967295)),
        ("TID-17.png", ImageKey(tracking_id=17)),
    ],
)
def test_file_names_carry_the_parcel_key(name: str, key: ImageKey) -> None:
    assert key_from_filename(Path(name)) == key


@pytest.mark.parametrize(
    "name", ["has space.png", "x" * 33 + ".png", "tid-4294967296.npy", "_.png"]
)
def test_names_without_a_key_say_how_to_name_files(name: str) -> None:
    with pytest.raises(NamingError, match="<HAWB>"):
        key_from_filename(Path(name))


def test_parse_key_rejects_garbage_with_the_value() -> None:
    with pytest.raises(NamingError, match="'a b'"):
        parse_key("a b")


# --- readers: every format, and damaged files --------------------------------------------------


def test_png_tiff_and_npy_in_8_and_16_bit_read_back_exactly(tmp_path: Path) -> None:
    raw16 = parcel_image(seed=1, level=1.0)
    raw8 = (raw16 >> 8).astype(np.uint8)
    cases = {
        png(tmp_path / "a.png", raw16): raw16,
        png(tmp_path / "b.png", raw8): raw8,
        tmp_path / "c.tif": raw16,
        tmp_path / "d.tiff": raw8,
        tmp_path / "e.npy": raw16.astype(np.float32) / 65535,
        tmp_path / "f.tif": np.stack([raw16, raw16 // 2]),  # dual energy
    }
    for path, array in cases.items():
        if path.suffix in (".tif", ".tiff"):
            tifffile.imwrite(path, array)
        elif path.suffix == ".npy":
            np.save(path, array)
        got = read_image_file(path)
        assert got.dtype == array.dtype, path.name
        np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("a.png", "truncated", "corrupt or truncated"),
        ("a.png", "garbage", "not a readable PNG"),
        ("a.png", "colour", "mode 'RGB'"),
        ("a.tif", "truncated", "TIFF is corrupt or truncated"),
        ("a.tif", "garbage", "TIFF is corrupt or truncated"),
        ("a.npy", "truncated", ".npy is corrupt or truncated"),
        ("a.npy", "garbage", ".npy is corrupt or truncated"),
        ("a.npy", "empty file", ".npy is corrupt or truncated"),
        ("a.bmp", "garbage", "unsupported file type"),
    ],
)
def test_damaged_files_give_a_clear_error(
    tmp_path: Path, name: str, damage: str, message: str
) -> None:
    path = tmp_path / name
    raw = parcel_image(level=1.0)
    if name.endswith(".png"):
        png(path, np.stack([raw >> 8] * 3, axis=-1).astype(np.uint8) if damage == "colour" else raw)
    elif name.endswith(".tif"):
        tifffile.imwrite(path, raw)
    else:
        np.save(path, raw)
    data = path.read_bytes() if path.exists() else b""
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x89PNX not an image at all" * 10)
    elif damage == "empty file":
        path.write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        read_image_file(path)
    assert message in str(info.value)
    assert name in str(info.value)


def test_dicos_file_key_and_pixels(tmp_path: Path) -> None:
    raw = parcel_image(level=1.0)
    path = write_dicos(tmp_path / "x.dcm", dicos_image(raw, ooi_id="CG7"))
    image = read_dicom_file(path)
    assert image.key == ImageKey(hawb="CG7")
    assert image.error is None
    np.testing.assert_array_equal(image.pixels, raw)


def test_dicos_accession_number_is_the_fallback_key_and_12_bit_data_are_scaled(
    tmp_path: Path,
) -> None:
    raw = (parcel_image(level=1.0) >> 4).astype(np.uint16)  # 12-bit values
    ds = dicos_image(raw, accession="tid-99", bits_stored=12)
    image = read_dicom_file(write_dicos(tmp_path / "x.dcm", ds))
    assert image.key == ImageKey(tracking_id=99)
    assert image.pixels is not None
    assert image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, raw / 4095, rtol=1e-6)


def test_dicom_without_pixel_data_is_read_with_its_error(tmp_path: Path) -> None:
    path = write_dicos(tmp_path / "x.dcm", dicos_image(None, ooi_id="CG8"))
    image = read_dicom_file(path)
    assert image.key == ImageKey(hawb="CG8")
    assert image.pixels is None
    assert image.error is not None
    assert "no pixel data (7FE0,0010)" in image.error


def test_dicom_with_short_pixel_data_names_the_problem(tmp_path: Path) -> None:
    ds = dicos_image(parcel_image(), ooi_id="CG9")
    ds.PixelData = ds.PixelData[:100]
    image = read_dicom_file(write_dicos(tmp_path / "x.dcm", ds))
    assert image.pixels is None
    assert image.error is not None
    assert "cannot be decoded" in image.error


@pytest.mark.parametrize("damage", ["cut in the header", "cut in the pixels", "not dicom"])
def test_damaged_dicom_files_give_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = write_dicos(tmp_path / "x.dcm", dicos_image(parcel_image(), ooi_id="CG1"))
    data = path.read_bytes()
    cut = {"cut in the header": data[:200], "cut in the pixels": data[:-1000]}
    path.write_bytes(cut.get(damage, b"hello" * 100))
    try:
        error = read_dicom_file(path).error  # pydicom reads what is there, leniently
    except ImageReadError as exc:
        error = str(exc)
    assert error is not None
    assert "x.dcm" in error
    assert any(word in error for word in ("not a DICOM", "no pixel data", "cannot be decoded"))


# --- the matcher -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(matcher: ImageMatcher, *sources: FolderSource) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(matcher.run())]
    tasks += [asyncio.create_task(s.run()) for s in sources]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def image(hawb: str = "", tracking_id: int | None = None, pixels: object = None) -> ScanImage:
    return ScanImage(hawb, tracking_id, "test", time.monotonic(), pixels)


async def test_image_before_parcel_and_parcel_before_image_both_match(tmp_path: Path) -> None:
    matcher = ImageMatcher(Quarantine(tmp_path / "q"))
    first = image("H1", pixels=parcel_image())
    matcher.deliver(first)
    assert await asyncio.wait_for(matcher.image_for("L1", 1, "H1"), WAIT) is first
    waiting = asyncio.ensure_future(matcher.image_for("L1", 2, "H2"))
    await asyncio.sleep(0)
    second = image("H2", pixels=parcel_image())
    matcher.deliver(second)
    assert await asyncio.wait_for(waiting, WAIT) is second
    assert matcher.held == 0


async def test_tracking_id_matches_only_on_the_sources_line(tmp_path: Path) -> None:
    matcher = ImageMatcher(Quarantine(tmp_path / "q"))
    matcher.deliver(image(tracking_id=5, pixels=parcel_image()), line="L2")
    other_line = asyncio.ensure_future(matcher.image_for("L1", 5, "HX"))
    await asyncio.sleep(0.05)
    assert not other_line.done()
    found = await asyncio.wait_for(matcher.image_for("L2", 5, "HY"), WAIT)
    assert found.tracking_id == 5
    other_line.cancel()


async def test_unclaimed_and_keyless_images_are_quarantined_and_listed(tmp_path: Path) -> None:
    alarms = Alarms(None, time.monotonic)
    quarantine = Quarantine(tmp_path / "q")
    matcher = ImageMatcher(quarantine, hold_s=0.2, alarms=alarms)
    async with running(matcher):
        matcher.deliver(image("NOBODY", pixels=parcel_image()))
        matcher.deliver(ScanImage("", None, "test", 0.0, None, "file name 'x.png' has no key"))
        await asyncio.wait_for(matcher.wait_quarantined(2), WAIT)
    entries = quarantine.entries()
    assert len(entries) == 2
    by_hawb = {e.hawb: e for e in entries}
    kept = by_hawb["NOBODY"]
    assert "within hold_s=0.2 s" in kept.reason
    assert kept.pixels_file is not None
    np.testing.assert_array_equal(np.load(kept.pixels_file), parcel_image())
    assert "has no key" in (by_hawb[""].error or "")
    assert "intake/quarantine" in alarms.active


async def test_overflow_quarantines_the_oldest_held_image(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    matcher = ImageMatcher(quarantine, max_held=2)
    async with running(matcher):
        for n in range(3):
            matcher.deliver(image(f"H{n}", pixels=parcel_image(n)))
        await asyncio.wait_for(matcher.wait_quarantined(1), WAIT)
    assert [e.hawb for e in quarantine.entries()] == ["H0"]
    assert "max_held=2" in quarantine.entries()[0].reason
    assert matcher.held == 2


# --- the watch folder ------------------------------------------------------------------------


async def test_watch_folder_feeds_good_and_bad_files_and_keeps_running(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    parts = build_intake(
        Intake(
            sources=[WatchFolderIntake(type="watch_folder", path=inbox, poll_s=0.05, settle_s=0)],
            quarantine=tmp_path / "q",
            hold_s=0.5,
        )
    )
    matcher = parts.matcher
    (source,) = parts.sources.values()
    assert isinstance(source, FolderSource)
    inbox.mkdir()
    raw = parcel_image(level=1.0)
    png(inbox / "GOOD1__top.png", raw)
    (inbox / "BAD1.png").write_bytes(b"not a png")
    (inbox / "EMPTY1.npy").write_bytes(b"")
    (inbox / "no key here.png").write_bytes(b"x")
    async with running(matcher, source):
        good = await asyncio.wait_for(matcher.image_for("L1", 1, "GOOD1"), WAIT)
        bad = await asyncio.wait_for(matcher.image_for("L1", 2, "BAD1"), WAIT)
        empty = await asyncio.wait_for(matcher.image_for("L1", 3, "EMPTY1"), WAIT)
        await asyncio.wait_for(matcher.wait_quarantined(3), WAIT)
        # intake is still running after the bad files: a later file still arrives
        np.save(inbox / "LATER1.npy", raw)
        later = await asyncio.wait_for(matcher.image_for("L1", 4, "LATER1"), WAIT)
    np.testing.assert_array_equal(good.pixels, raw)
    assert bad.pixels is None
    assert "BAD1.png" in (bad.error or "")
    assert empty.pixels is None
    assert "corrupt or truncated" in (empty.error or "")
    assert later.pixels is not None
    assert sorted(p.name for p in (inbox / DONE).iterdir()) == ["GOOD1__top.png", "LATER1.npy"]
    assert sorted(p.name for p in (inbox / FAILED).iterdir()) == [
        "BAD1.png",
        "EMPTY1.npy",
        "no key here.png",
    ]
    # the keyless file and both unreadable ones are on record, each with its reason
    reasons = {e.hawb: e.reason for e in matcher.quarantined}
    assert "carries no parcel key" in reasons[""]
    assert reasons["BAD1"].startswith("unreadable image: BAD1.png")
    assert reasons["EMPTY1"].startswith("unreadable image: EMPTY1.npy")


async def test_files_being_written_are_left_until_complete(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    matcher = ImageMatcher(Quarantine(tmp_path / "q"))
    source = FolderSource(
        inbox,
        matcher,
        decode_image_file,
        patterns=["*.npy"],
        settle_s=0.3,
    )
    raw = parcel_image()
    with (inbox / "H1.npy.part").open("wb") as handle:  # temp name: never taken
        np.save(handle, raw)
    assert await source.poll_once() == 0
    assert await source.poll_once() == 0
    growing = inbox / "H2.npy"
    with growing.open("wb") as handle:  # a file still being copied under its final name
        handle.write(b"\x93NUMPY")
        handle.flush()
        assert await source.poll_once() == 0
        os.utime(growing)  # still fresh: not settled
        assert await source.poll_once() == 0
    (inbox / "H1.npy.part").replace(inbox / "H1.npy")  # the rename completes H1
    growing.unlink()
    np.save(growing, raw)
    old = time.time() - 5
    os.utime(inbox / "H1.npy", (old, old))
    os.utime(growing, (old, old))
    assert await source.poll_once() == 0  # first sight: size and time recorded
    assert await source.poll_once() == 2  # unchanged and settled: taken
    assert matcher.held == 2


async def test_dicom_folder_reads_keys_from_the_dataset(tmp_path: Path) -> None:
    inbox = tmp_path / "dicos"
    inbox.mkdir()
    parts = build_intake(
        Intake(
            sources=[
                DicomFolderIntake(type="dicom_folder", path=inbox, poll_s=0.05, settle_s=0),
                InProcessIntake(type="inprocess"),
            ],
            quarantine=tmp_path / "q",
        )
    )
    (source, _) = parts.sources.values()
    assert isinstance(source, FolderSource)
    raw = parcel_image(level=1.0)
    write_dicos(inbox / "scan0001.dcm", dicos_image(raw, ooi_id="CG100"))
    write_dicos(inbox / "scan0002.dcm", dicos_image(None, ooi_id="CG101"))
    async with running(parts.matcher, source):
        good = await asyncio.wait_for(parts.matcher.image_for("L1", 1, "CG100"), WAIT)
        nopix = await asyncio.wait_for(parts.matcher.image_for("L1", 2, "CG101"), WAIT)
    np.testing.assert_array_equal(good.pixels, raw)
    assert nopix.pixels is None
    assert "no pixel data" in (nopix.error or "")
    assert parts.references.pop(good) is not None  # kept for a threat report
