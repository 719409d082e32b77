"""DICOM and DICOS images → numpy arrays and parcel keys (pydicom).

Matching key: the HAWB travels in **Patient ID (0010,0020)**, which DICOS calls the *OOI ID*
(the object of inspection's identifier). When it is empty, **Accession Number (0008,0050)**
is used. Either may hold ``tid-<tracking id>`` instead of a HAWB (see
:mod:`controller.intake.naming`).

Pixels: unsigned data whose Bits Stored is below Bits Allocated are scaled to float32
transmission in [0, 1] by ``2**BitsStored - 1``; full 16- or 8-bit data stay uint16/uint8.
MONOCHROME1 (bright = absorbing) is inverted so that bright always means transmitting.
Several frames are read as energy channels (C×H×W).
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

from controller.intake.naming import ImageKey, NamingError, parse_key
from controller.intake.readers import ImageReadError

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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


def read_dicom_file(path: Path) -> DicomImage:
    """Read a DICOM/DICOS file; unreadable files raise :class:`ImageReadError`."""
    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ImageReadError(f"{path.name}: not a DICOM file ({exc})") from None
    except Exception as exc:  # truncated headers raise EOFError, struct.error, ...
        raise ImageReadError(f"{path.name}: DICOM file is corrupt or truncated ({exc})") from None
    return decode_dataset(dataset, path.name)


def decode_dataset(dataset: Dataset, label: str) -> DicomImage:
    """The parcel key, a reference, and the pixels (or why there are none) of a dataset."""
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
        pixels = _pixels(dataset, label)
    except ImageReadError as exc:
        return DicomImage(key, key_error, reference, None, str(exc))
    return DicomImage(key, key_error, reference, pixels, None)


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
