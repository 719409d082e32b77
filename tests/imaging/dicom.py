"""DICOS/DICOM test images built with pydicom, as a scanner would send them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

DICOS_DX_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.501.2.2")


def dicos_image(
    pixels: np.ndarray | None,
    *,
    ooi_id: str = "",
    accession: str = "",
    bits_stored: int = 16,
    photometric: str = "MONOCHROME2",
    sop_class: UID = DICOS_DX_PROCESSING,
) -> Dataset:
    """A DICOS digital X-ray dataset; ``pixels`` None leaves the pixel data out."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = ooi_id  # DICOS: OOI ID
    ds.AccessionNumber = accession
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if pixels is not None:
        frames = pixels if pixels.ndim == 3 else pixels[None]
        ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
        if frames.shape[0] > 1:
            ds.NumberOfFrames = int(frames.shape[0])
        ds.PixelData = np.ascontiguousarray(frames.astype(np.uint16)).tobytes()
    else:
        ds.Rows, ds.Columns = 64, 64
    return ds


def write_dicos(path: Path, ds: Dataset) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
