"""DICOM and DICOS images → numpy arrays and parcel keys (pydicom).

Matching key: the HAWB travels in **Patient ID (0010,0020)**, which DICOS calls the *OOI ID*
(the object of inspection's identifier). When it is empty, **Accession Number (0008,0050)**
is used. Either may hold ``tid-<tracking id>`` instead of a HAWB (see
:mod:`controller.intake.naming`).

Pixels: unsigned data whose Bits Stored is below Bits Allocated are scaled to float32
transmission in [0, 1] by ``2**BitsStored - 1``; full 16- or 8-bit data stay uint16/uint8.
MONOCHROME1 (bright = absorbing) is inverted so that bright always means transmitting.
Several frames are read as energy channels (C×H×W).

Limits: a file over ``max_file_bytes`` is parsed only up to its pixel data (for the key);
otherwise Rows, Columns, Number of Frames, Samples per Pixel and Bits Allocated are checked
against ``max_pixels`` and ``max_decoded_bytes`` before the pixel data are decoded. Large
values are read lazily (``defer_size``), so a refused image's pixel data are never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from controller.intake.faults import (
    DEFAULT_LIMITS,
    Fault,
    ImageReadError,
    check_encoded_bytes,
    check_image_size,
)
from controller.intake.naming import ImageKey, NamingError, parse_key
from controller.intake.settings import ImageLimits

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Element values longer than this are read from the file only when used.
DEFER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DicomReference:
    """What a threat report needs to point back at the image it is about."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    accession_number: str


@dataclass(frozen=True, slots=True)
class DicomImage:
    key: ImageKey | None
    key_error: str
    reference: DicomReference
    pixels: NDArray[Any] | None
    error: str | None
    fault: Fault | None = None


def read_dicom_file(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> DicomImage:
    """Read a DICOM/DICOS file within ``limits``; unreadable files raise
    :class:`ImageReadError`, an oversize image comes back without pixels and with its key."""
    try:
        size = path.stat().st_size
        dataset = pydicom.dcmread(
            path, defer_size=DEFER_BYTES, stop_before_pixels=size > limits.max_file_bytes
        )
    except InvalidDicomError as exc:
        raise ImageReadError(f"{path.name}: not a DICOM file ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # truncated headers raise EOFError, struct.error, ...
        raise ImageReadError(f"{path.name}: DICOM file is corrupt or truncated ({exc})") from None
    return decode_dataset(dataset, path.name, limits, encoded_bytes=size)


def decode_dataset(
    dataset: Dataset,
    label: str,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    encoded_bytes: int | None = None,
    what: str = "file",
) -> DicomImage:
    """The parcel key, a reference, and the pixels (or why there are none) of a dataset;
    ``encoded_bytes`` (the file or the received dataset, named by ``what``) and the image
    size from the header are checked against ``limits`` first."""
    key, key_error = _key(dataset)
    reference = DicomReference(
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        patient_id=str(dataset.get("PatientID", "")),
        accession_number=str(dataset.get("AccessionNumber", "")),
    )
    try:
        if encoded_bytes is not None:
            check_encoded_bytes(label, encoded_bytes, limits, what=what)
        check_pixel_header(dataset, label, limits)
        pixels = _pixels(dataset, label)
    except ImageReadError as exc:
        return DicomImage(key, key_error, reference, None, str(exc), exc.fault)
    return DicomImage(key, key_error, reference, pixels, None)


def check_pixel_header(dataset: Dataset, label: str, limits: ImageLimits) -> None:
    """Refuse pixel data whose decoded size, by the header, is over ``limits``."""
    if not any(k in dataset for k in PIXEL_KEYWORDS):
        return  # _pixels says so
    try:
        rows, columns = int(dataset.get("Rows")), int(dataset.get("Columns"))
        frames = max(1, int(dataset.get("NumberOfFrames") or 1))
        samples = max(1, int(dataset.get("SamplesPerPixel") or 1))
        allocated = int(dataset.get("BitsAllocated") or 8)
        stored = int(dataset.get("BitsStored") or allocated)
        signed = int(dataset.get("PixelRepresentation") or 0) == 1
    except (TypeError, ValueError) as exc:
        raise ImageReadError(
            f"{label}: DICOM image attributes Rows, Columns, Number of Frames, Samples per "
            f"Pixel, Bits Allocated/Stored missing or not numbers ({exc})"
        ) from None
    if "DoubleFloatPixelData" in dataset:
        per_sample = 8
    elif "FloatPixelData" in dataset:
        per_sample = 4
    else:
        per_sample = max(1, (allocated + 7) // 8)
        if not signed and stored < allocated:
            per_sample = max(per_sample, 4)  # scaled to float32 transmission
    check_image_size(
        label,
        limits,
        height=rows,
        width=columns,
        decoded_bytes=frames * rows * columns * samples * per_sample,
        layout=f"{frames} frame(s) × {columns}×{rows} px × {samples} sample(s) × {per_sample} B",
    )


def _key(dataset: Dataset) -> tuple[ImageKey | None, str]:
    for keyword in ("PatientID", "AccessionNumber"):
        value = str(dataset.get(keyword, "") or "").strip()
        if value:
            try:
                return parse_key(value), ""
            except NamingError as exc:
                return None, f"{keyword}: {exc}"
    return None, (
        "neither Patient ID / OOI ID (0010,0020) nor Accession Number (0008,0050) carries "
        "a HAWB or tid-<tracking id>"
    )


def _pixels(dataset: Dataset, label: str) -> NDArray[Any]:
    if not any(k in dataset for k in PIXEL_KEYWORDS):
        raise ImageReadError(f"{label}: DICOM dataset has no pixel data (7FE0,0010)")
    try:
        array = np.asarray(dataset.pixel_array)
    except Exception as exc:  # short pixel data, unsupported transfer syntax, bad attributes
        raise ImageReadError(f"{label}: DICOM pixel data cannot be decoded ({exc})") from None
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")) not in (
        "MONOCHROME1",
        "MONOCHROME2",
    ):
        raise ImageReadError(
            f"{label}: Photometric Interpretation is "
            f"{dataset.get('PhotometricInterpretation')!r}; expected MONOCHROME1 or MONOCHROME2"
        )
    if array.dtype.kind == "i":
        raise ImageReadError(
            f"{label}: signed pixel data (Pixel Representation 1); expected unsigned "
            "transmission values"
        )
    stored = int(dataset.get("BitsStored", array.dtype.itemsize * 8))
    allocated = array.dtype.itemsize * 8
    if array.dtype.kind == "u" and stored < allocated:
        top = float(2**stored - 1)
        if int(array.max()) > top:
            raise ImageReadError(
                f"{label}: pixel values exceed Bits Stored ({stored}): max {int(array.max())}"
            )
        array = array.astype(np.float32) / np.float32(top)
    if str(dataset.get("PhotometricInterpretation")) == "MONOCHROME1":
        array = (1.0 - array) if array.dtype.kind == "f" else np.iinfo(array.dtype).max - array
    return array
