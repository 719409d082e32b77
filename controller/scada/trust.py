"""The SCADA server's trust list: the client certificates it admits, by SHA-256 of their DER.

The same rule as the emulated PLC's trust list (docs/opcua-security.md): files, or folders
whose certificate files are all certificates; an exact match of the DER certificate, no CA
chains, no revocation lists. A trust entry that is missing or holds no certificate stops the
server at start, naming the file: a typo must not leave SCADA locked out without a word (or,
worse, look like a working trust list).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from controller.core.pins import fingerprint

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class TrustListError(ValueError):
    """A trust entry is missing, unreadable or holds no certificate (names the file)."""


def certificate_der(path: Path) -> bytes:
    """The DER bytes of the certificate in a PEM or DER file (told apart by content)."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise TrustListError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in content:
            certificate = x509.load_pem_x509_certificate(content)
        else:
            certificate = x509.load_der_x509_certificate(content)
    except ValueError:
        raise TrustListError(f"{path}: not a certificate (expected PEM or DER)") from None
    return certificate.public_bytes(Encoding.DER)


def trust_list(entries: Iterable[Path]) -> dict[str, Path]:
    """Fingerprint → file for every certificate the entries name."""
    trusted: dict[str, Path] = {}
    for entry in entries:
        files = (
            sorted(p for p in entry.iterdir() if p.suffix.lower() in CERTIFICATE_SUFFIXES)
            if entry.is_dir()
            else [entry]
        )
        for path in files:
            trusted[fingerprint(certificate_der(path))] = path
    return trusted
