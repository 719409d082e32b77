"""Barcodes as text that keeps every byte the scanner sent and that any journal can store.

A barcode field carries bytes (docs/plc-interface.md, section 3.3). The controller works with
text, and the journal refuses a NUL character (PostgreSQL cannot store one), so a barcode is
turned into text losslessly: printable ASCII (0x20…0x7E) stays as it is, except the backslash,
which becomes ``\\\\``; every other byte becomes ``\\xNN`` (two upper-case hex digits). The text
is printable ASCII, so the journal always takes it, and :func:`barcode_bytes` gives back the
exact bytes. A well-formed barcode (printable ASCII without a backslash, which is every real
HAWB) reads the same either way.
"""

from __future__ import annotations

import re

_PLAIN = frozenset(range(0x20, 0x7F)) - {0x5C}
_TEXT = {byte: chr(byte) if byte in _PLAIN else f"\\x{byte:02X}" for byte in range(256)}
_TEXT[0x5C] = "\\\\"
_ESCAPE = re.compile(r"\\(?:x([0-9A-F]{2})|(\\))")


def barcode_text(raw: bytes) -> str:
    """The barcode as printable-ASCII text that keeps every byte (see the module docstring)."""
    if raw.isascii() and raw.isalnum():  # the usual HAWB: nothing to escape
        return raw.decode("ascii")
    return "".join(_TEXT[byte] for byte in raw)


def barcode_bytes(text: str) -> bytes:
    """The scanner's bytes back from :func:`barcode_text`'s text.

    Raises ValueError for text that :func:`barcode_text` cannot have written (a character
    outside printable ASCII, or a backslash that starts neither ``\\\\`` nor ``\\xNN``)."""
    out = bytearray()
    at = 0
    for match in _ESCAPE.finditer(text):
        out += _plain(text[at : match.start()], at)
        hex_digits, _ = match.groups()
        out.append(int(hex_digits, 16) if hex_digits else 0x5C)
        at = match.end()
    out += _plain(text[at:], at)
    return bytes(out)


def _plain(part: str, offset: int) -> bytes:
    for i, char in enumerate(part):
        if ord(char) not in _PLAIN:
            raise ValueError(
                f"barcode text character {offset + i} is {char!r}, expected printable ASCII "
                "other than a backslash, \\\\ or \\xNN"
            )
    return part.encode("ascii")
