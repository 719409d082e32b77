"""Certificate pins: SHA-256 fingerprints of DER certificates, and certificate files read as DER.

Standard library only, so the settings (pydantic only) can check a pin's format and a
certificate file at load, and both OPC UA ends compare certificates by one rule. A pin is the
SHA-256 of the certificate's DER encoding, written as ``openssl x509 -noout -fingerprint
-sha256`` prints it after ``Fingerprint=``: 32 hexadecimal byte pairs joined by colons
(``3A:7F:…``); 64 hexadecimal digits without colons are accepted too, in either case.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from pathlib import Path

from controller.core.pins import fingerprint, first_certificate

PIN_FORMAT = (
    "the SHA-256 fingerprint of the DER certificate: 32 hexadecimal byte pairs joined by colons, "
    "as `openssl x509 -noout -fingerprint -sha256 -in CERT` prints it after 'Fingerprint=' "
    "(or 64 hexadecimal digits)"
)
CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")
"""Files a trust folder contributes; anything else in it (a private key, a README) is skipped."""

_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")
_DIGITS = re.compile(r"[0-9A-Fa-f]{64}")
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


class CertificateFileError(ValueError):
    """A certificate file is missing, unreadable or holds no certificate (names the file)."""


def parse_pin(text: str) -> str:
    """``text`` as a pin in the canonical form (upper case, colons); ValueError if malformed."""
    text = text.strip()
    if _PAIRS.fullmatch(text):
        return text.upper()
    if _DIGITS.fullmatch(text):
        return ":".join(text[i : i + 2] for i in range(0, 64, 2)).upper()
    raise ValueError(f"expected {PIN_FORMAT}")


def certificate_der(path: Path) -> bytes:
    """The DER bytes of the first certificate in a PEM or DER file, told apart by content,
    not by the file's suffix: a chain or bytes after the certificate (a DER file with a
    trailing newline) are not part of it, and would give another pin. Only the outer
    structure is checked here; the OPC UA library parses the certificate itself when it uses
    it."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CertificateFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    match = _PEM.search(content)
    if match is not None:
        try:
            content = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except binascii.Error:
            raise CertificateFileError(f"{path}: the PEM certificate is not valid base64") from None
    elif b"-----BEGIN" in content:
        raise CertificateFileError(f"{path}: PEM file without a CERTIFICATE block (a key?)")
    try:
        return first_certificate(content)
    except ValueError:
        raise CertificateFileError(f"{path}: not a certificate (expected PEM or DER)") from None


def certificate_files(locations: Iterable[Path]) -> list[Path]:
    """The certificate files of ``locations``: each file as given, each folder's files whose
    suffix is one of :data:`CERTIFICATE_SUFFIXES` (not recursive); a missing location fails."""
    files: list[Path] = []
    for location in locations:
        if location.is_dir():
            files += sorted(
                p
                for p in location.iterdir()
                if p.is_file() and p.suffix.lower() in CERTIFICATE_SUFFIXES
            )
        elif location.is_file():
            files.append(location)
        else:
            raise CertificateFileError(f"{location}: no such file or folder")
    return files


def trust_list(locations: Iterable[Path]) -> dict[str, Path]:
    """Pin → file for every certificate in ``locations`` (files or folders)."""
    return {fingerprint(certificate_der(path)): path for path in certificate_files(locations)}
