"""Decompression bombs and other oversize images, written cheaply and for real.

Each helper writes a genuine file that a decoder would accept and inflate to far more memory
than it takes on disk, without ever holding the inflated image in this process: PNGs are
written chunk by chunk from a streamed zlib of zero rows, DICOM RLE frames are made of
repeat runs, and a huge ``.npy`` is a sparse file. The intake must refuse them from the header.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from tests.imaging.dicom import dicos_image, write_dicos

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(path: Path, width: int, height: int, *, bit_depth: int = 8) -> Path:
    """A valid greyscale PNG of ``width``×``height`` zero pixels (a 20000×20000 8-bit one is
    about 390 KB: what the issue found in the watch folder). Rows are compressed one at a
    time, so writing it needs only one row of memory."""
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)  # filter byte 0 (None), then zeros
    packer = zlib.compressobj(9)
    with path.open("wb") as out:
        out.write(_PNG_SIGNATURE)
        out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)))
        pending = bytearray()
        for _ in range(height):
            pending += packer.compress(row)
            if len(pending) >= 1 << 16:
                out.write(_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += packer.flush()
        out.write(_chunk(b"IDAT", bytes(pending)))
        out.write(_chunk(b"IEND", b""))
    return path


def jpeg_header(path: Path, width: int, height: int) -> Path:
    """The header of a baseline greyscale JPEG of ``width``×``height`` (SOI, SOF0, SOS) and a
    token scan: Pillow opens it as mode ``L`` at that size, and decoding would allocate the
    whole image before finding the scan short. Stands for any non-PNG format Pillow reads."""
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0, 0, 63, 0])
    path.write_bytes(
        b"\xff\xd8"
        + b"\xff\xc0"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xda"
        + struct.pack(">H", len(sos) + 2)
        + sos
        + bytes(64)
        + b"\xff\xd9"
    )
    return path


def _rle_segment(length: int) -> bytes:
    """A DICOM RLE (PackBits) segment decoding to ``length`` zero bytes."""
    full, rest = divmod(length, 128)
    segment = b"\x81\x00" * full  # -127: repeat the next byte 128 times
    if rest:
        segment += bytes([257 - rest if rest > 1 else 0, 0])
    return segment + (b"\x00" if len(segment) % 2 else b"")


def dicom_rle_bomb(path: Path, rows: int, columns: int, *, ooi_id: str) -> Path:
    """A DICOS image whose RLE Lossless pixel data (a few MB) decode to ``rows``×``columns``
    16-bit pixels: a compressed DICOM is as much a bomb as a PNG."""
    ds = dicos_image(np.zeros((1, 1), np.uint16), ooi_id=ooi_id)
    ds.Rows, ds.Columns = rows, columns
    plane = _rle_segment(rows * columns)  # one segment per byte of the 16-bit sample
    header = struct.pack("<16I", 2, 64, 64 + len(plane), *([0] * 13))
    ds.PixelData = encapsulate([header + plane + plane])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return write_dicos(path, ds)


def dicom_header_bomb(path: Path, rows: int, columns: int, *, ooi_id: str, frames: int = 1) -> Path:
    """A DICOS image whose header claims ``frames``×``rows``×``columns`` pixels over a few
    bytes of pixel data: refused from the header, whatever the data would have said."""
    return write_dicos(path, header_bomb_dataset(rows, columns, ooi_id=ooi_id, frames=frames))


def header_bomb_dataset(rows: int, columns: int, *, ooi_id: str, frames: int = 1) -> Dataset:
    """The dataset of :func:`dicom_header_bomb`, e.g. to push over the network."""
    ds = dicos_image(np.zeros((1, 1), np.uint16), ooi_id=ooi_id)
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def tiff_bomb(path: Path, height: int, width: int, *, planes: int = 1, tile: int = 512) -> Path:
    """A tiled, zlib-compressed 16-bit TIFF of zeros (12000×12000 px is about 300 KB), one
    page per plane (``planes`` > 1 makes a C×H×W stack): written tile by tile, so making it
    needs one tile of memory."""
    zeros = np.zeros((tile, tile), np.uint16)
    count = planes * -(-height // tile) * -(-width // tile)
    tifffile.imwrite(
        path,
        data=(zeros for _ in range(count)),
        shape=(planes, height, width) if planes > 1 else (height, width),
        dtype="uint16",
        tile=(tile, tile),
        photometric="minisblack",
        compression="zlib",
    )
    return path


def sparse_npy(path: Path, shape: tuple[int, ...], dtype: type[np.generic] = np.uint16) -> Path:
    """A real ``.npy`` of ``shape`` written as a sparse file: huge on paper, nothing on disk."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del array
    return path
