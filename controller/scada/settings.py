"""The site file's ``scada`` section: the OPC UA server SCADA and historians read.

Off by default. On loopback it may serve without security; beyond this host it needs
``security`` (Basic256Sha256 Sign&Encrypt, client certificates on a trust list) or an explicit
``allow_insecure_network``, so KPIs and alarm texts do not go out in clear by an oversight.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from controller.core.settings import Strict

DEFAULT_NAMESPACE = "urn:cargogate:scada"
DEFAULT_PORT = 4841
"""Next to OPC UA's customary 4840, which a PLC (or the PLC emulator on a bench) may hold."""


class ScadaSecurity(Strict):
    """Basic256Sha256 Sign&Encrypt: the server's own certificate, and the client certificates
    it admits (exact SHA-256 match of the DER certificate; no CA chains)."""

    certificate: Path
    """The server's application certificate, PEM (``*.pem``) or DER (``*.der``): the OPC UA
    library picks the format by the file name. Its subjectAltName carries
    ``application_uri``."""
    private_key: Path
    trusted: list[Path] = Field(min_length=1)
    """Client certificates admitted: files, or folders whose ``.der``, ``.pem``, ``.crt`` and
    ``.cer`` files are all certificates. Everyone else is refused at session activation."""
    application_uri: str = "urn:cargogate:scada"


class ScadaSettings(Strict):
    """The controller's OPC UA server for SCADA (read-only; off by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    """Where to listen; the hub's network needs ``security`` (or ``allow_insecure_network``)."""
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    """0 picks a free port (tests)."""
    refresh_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    """How often the published values are taken from a fresh snapshot of the site."""
    namespace_uri: Annotated[str, Field(min_length=1)] = DEFAULT_NAMESPACE
    """The namespace of every CargoGate node (clients resolve its index by this URI)."""
    security: ScadaSecurity | None = None
    allow_insecure_network: bool = False
    """Serve without security beyond this host: only on a closed test bench."""

    @model_validator(mode="after")
    def _secured_beyond_loopback(self) -> Self:
        if (
            self.enabled
            and self.security is None
            and not _loopback(self.host)
            and not self.allow_insecure_network
        ):
            raise ValueError(
                f"host {self.host!r} serves the hub's network: give security (certificate, "
                "private_key, trusted) or allow_insecure_network: true on a closed bench"
            )
        return self


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
