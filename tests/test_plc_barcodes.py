"""Barcodes reach the journal losslessly: NUL, non-ASCII and backslash barcodes, end to end.

A NUL used to make the journal refuse the parcel's rows (PostgreSQL cannot store one) and a
non-ASCII byte was replaced, so the scanner's bytes were gone. Now every byte survives as
printable text (docs/plc-interface.md, section 3.3), over each wire into a real SQLite journal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.reasons import Reason
from plc_adapters.barcodes import barcode_bytes, barcode_text
from plc_adapters.layout import TelegramKind
from plc_adapters.telegrams import RawTelegram
from tests.plc.controlled import controlled, end_stream, rows
from tests.plc.rigs import PROTOCOLS, open_rig, wait_for


def test_every_byte_survives_as_printable_text_and_back() -> None:
    raw = bytes(range(256)) + b"\\\\x41\\"
    text = barcode_text(raw)
    assert text.isascii()
    assert text.isprintable()
    assert barcode_bytes(text) == raw
    for byte in range(256):
        assert barcode_bytes(barcode_text(bytes((byte,)))) == bytes((byte,))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"CG123456789", "CG123456789"),
        (b"AB 12-3/4.5", "AB 12-3/4.5"),
        (b"", ""),
        (b"A\\B", "A\\\\B"),
        (b"A\\x41", "A\\\\x41"),  # a backslash then "x41" is not the byte 0x41
        (b"AB\x00CD", "AB\\x00CD"),
        ("CGÉ1".encode(), "CG\\xC3\\x891"),
        (b"\xff\x1a", "\\xFF\\x1A"),
    ],
)
def test_barcode_text(raw: bytes, text: str) -> None:
    assert barcode_text(raw) == text
    assert barcode_bytes(text) == raw


@pytest.mark.parametrize("text", ["CGÉ1", "A\\B", "A\\x4", "A\\xff", "A\\", "AB\x00"])
def test_text_the_encoder_never_writes_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="barcode text character"):
        barcode_bytes(text)


BARCODES = {
    1: ("CG100", "CG100"),  # well formed: released
    2: ("CG\\200", "CG\\\\200"),  # a backslash is printable ASCII: well formed, released
    3: ("CG\x00300", "CG\\x00300"),  # a NUL inside: malformed, exception, but journalled
    4: ("CGÉ400", "CG\\xC3\\x89400"),  # non-ASCII (its UTF-8 bytes): malformed, journalled
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_nul_non_ascii_and_backslash_barcodes_are_journalled_with_every_byte(
    protocol: str, tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    async with open_rig(protocol, read=False) as rig, controlled(rig.sorter, path, rig.clock):
        for tracking_id, (barcode, _) in BARCODES.items():
            rig.plant.request(tracking_id, barcode, rig.clock.now())
        if protocol == "modbus":  # bytes that are not UTF-8 at all: Modbus carries them
            seq = rig.plc.next_seq()
            raw = b"\xffCG\x00500"
            kind = TelegramKind.DESTINATION_REQUEST
            rig.inject(RawTelegram(seq, kind, 5, rig.plc.clock_ms(), barcode=raw))
        expected = len(BARCODES) + (protocol == "modbus")
        await wait_for(
            lambda: len([r for r in rows(path) if r["kind"] == "decision"]) == expected,
            "every parcel decided and journalled",
        )
        await end_stream(rig.sorter)
    journal = rows(path)
    opened = {r["tracking_id"]: r for r in journal if r["state_to"] == "scanned"}
    decided = {r["tracking_id"]: r for r in journal if r["kind"] == "decision"}
    for tracking_id, (barcode, text) in BARCODES.items():
        assert opened[tracking_id]["hawb"] == text
        assert barcode_bytes(opened[tracking_id]["hawb"]) == barcode.encode()
        malformed = tracking_id >= 3
        assert decided[tracking_id]["hawb"] == text
        reasons = decided[tracking_id]["reasons"]
        assert (Reason.MALFORMED_TELEGRAM in reasons) is malformed, reasons
        assert decided[tracking_id]["lane"] == (9 if malformed else 1)
    if protocol == "modbus":
        assert opened[5]["hawb"] == "\\xFFCG\\x00500"
        assert barcode_bytes(opened[5]["hawb"]) == b"\xffCG\x00500"
