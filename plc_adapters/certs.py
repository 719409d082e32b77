"""Self-signed OPC UA application certificates for commissioning and tests.

Production certificates come from the site's PKI; these are for a lab, the emulator and the
test suite, written into a folder the caller chooses (never into the repository).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID


@dataclass(frozen=True, slots=True)
class CertificatePair:
    certificate: Path  # DER
    private_key: Path  # PEM, unencrypted: keep the folder private
    application_uri: str


def make_certificate(
    folder: Path, name: str, application_uri: str, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> CertificatePair:
    """Write ``<name>.der`` and ``<name>-key.pem`` into ``folder``; valid for client and server
    use, with the application URI and ``hosts`` (IP addresses or DNS names) as alt names."""
    folder.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    certificate = generate_self_signed_app_certificate(
        key,
        name,
        {"organizationName": "CargoGate"},
        alt_names,
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
    )
    cert_path = folder / f"{name}.der"
    key_path = folder / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    return CertificatePair(cert_path, key_path, application_uri)
