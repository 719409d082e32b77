"""Certificate pins: a certificate named by the SHA-256 of its DER bytes, as
``openssl x509 -noout -fingerprint -sha256`` prints it. The one rule the PLC link, the PLC
emulator's trust list and the SCADA server's all compare by (standard library only)."""

from __future__ import annotations

import hashlib


def fingerprint(der: bytes) -> str:
    """The pin of a DER certificate."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def first_certificate(der: bytes) -> bytes:
    """The first certificate of DER certificates sent back to back (a chain, as OPC UA sends
    one): the outer SEQUENCE by its encoded length."""
    if len(der) < 2 or der[0] != 0x30:
        raise ValueError("not a DER certificate")
    size = der[1]
    if size < 0x80:
        end = 2 + size
    else:
        width = size & 0x7F  # 0: indefinite length, which DER forbids
        if not 1 <= width <= 4 or len(der) < 2 + width:
            raise ValueError("not a DER certificate (bad length)")
        end = 2 + width + int.from_bytes(der[2 : 2 + width], "big")
    if len(der) < end:
        raise ValueError(f"a truncated DER certificate ({len(der)} of {end} bytes)")
    return der[:end]
