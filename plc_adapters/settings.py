"""Settings for the OPC UA and Modbus TCP sorter adapters (pydantic only: no asyncua, no pymodbus).

A line's ``sorter`` block in the site file selects one by ``type``. The same block tells the
PLC emulator (``cargogate plc-emulator``) where to listen, so one site file drives both ends.
Passwords never sit in the site file: name an environment variable or a file instead. The
adapters are built by :mod:`plc_adapters.factory` (which loads the protocol libraries) and
registered in :mod:`plc_adapters.registration`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from plc_adapters.cert_pins import CertificateFileError, certificate_der, parse_pin
from plc_adapters.layout import Layout
from plc_adapters.wire_sorter import LinkTiming

log = logging.getLogger(__name__)

OPCUA_PREFETCH_SLOTS = 4
"""Telegram slots an OPC UA read takes along with the header (one round trip saved)."""


class SettingsError(ValueError):
    """A setting cannot be used as given (names the field, the value and what was expected)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Link(_Strict):
    """Ring sizes and link supervision, common to both protocols."""

    ring_size: int = Field(default=64, ge=1, le=1024)
    """Slots in each ring (telegrams and replies); the PLC must be built with the same."""
    lane_slots: int = Field(default=32, ge=1, le=50)
    """Entries in the lane status table."""
    heartbeat_period_s: PositiveFloat = 0.25
    heartbeat_timeout_s: PositiveFloat = 2.0
    backoff_initial_s: PositiveFloat = 0.1
    backoff_max_s: PositiveFloat = 5.0
    plc_clock_staleness_s: float = Field(default=0.02, ge=0, le=1)
    """How old the PLC's ``plc_clock_ms`` may be when read (its scan cycle)."""

    @model_validator(mode="after")
    def _heartbeat_timeout_covers_periods(self) -> Link:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_period_s:
            raise ValueError(
                f"heartbeat_timeout_s {self.heartbeat_timeout_s} must be at least twice "
                f"heartbeat_period_s {self.heartbeat_period_s}"
            )
        return self

    def layout(self) -> Layout:
        return Layout(self.ring_size, self.lane_slots)


class OpcUaSecurity(_Strict):
    """Basic256Sha256 Sign&Encrypt. Paths are PEM or DER files; keep private keys out of git.

    The PLC's certificate is known in advance: as a file (``server_certificate``) or as a pin
    (``server_certificate_sha256``). On every connect the certificate the PLC presents must be
    that one, or the link is refused. ``insecure_accept_any_server_cert`` instead trusts
    whatever answers at the endpoint (a bench only; warned at load and on every connect).
    """

    certificate: Path
    private_key: Path
    server_certificate: Path | None = None
    """The PLC's certificate file (PEM or DER); read and checked at load."""
    server_certificate_sha256: str | None = None
    """Pin: the SHA-256 fingerprint of the PLC's DER certificate, ``AB:CD:…`` (32 pairs) as
    ``openssl x509 -noout -fingerprint -sha256`` prints it, or 64 hex digits."""
    insecure_accept_any_server_cert: bool = False
    """Take the PLC's certificate from its endpoint list unchecked: anyone answering at the
    endpoint is trusted. For a bench only; pin the certificate instead."""
    application_uri: str = "urn:cargogate:controller"
    """Must match the URI in ``certificate``'s subjectAltName."""

    @field_validator("server_certificate")
    @classmethod
    def _a_certificate_file(cls, path: Path | None) -> Path | None:
        """A missing or wrong file fails ``config check``, not the first connect."""
        if path is not None:
            try:
                certificate_der(path)
            except CertificateFileError as exc:
                raise ValueError(str(exc)) from None
        return path

    @field_validator("server_certificate_sha256")
    @classmethod
    def _a_pin(cls, pin: str | None) -> str | None:
        return None if pin is None else parse_pin(pin)

    @model_validator(mode="after")
    def _server_certificate_known(self) -> OpcUaSecurity:
        """Exactly one way to know the PLC's certificate: a file, a pin, or (insecure) none."""
        known = [
            name
            for name in ("server_certificate", "server_certificate_sha256")
            if getattr(self, name) is not None
        ]
        if len(known) > 1:
            raise ValueError("give server_certificate or server_certificate_sha256, not both")
        if known and self.insecure_accept_any_server_cert:
            raise ValueError(
                f"insecure_accept_any_server_cert: true contradicts {known[0]}: remove it"
            )
        if not known and not self.insecure_accept_any_server_cert:
            raise ValueError(
                "server_certificate or server_certificate_sha256 is required with security on: "
                "the PLC's certificate file, or its pin (openssl x509 -noout -fingerprint "
                "-sha256 -in plc.der); without either, anyone answering at the endpoint would "
                "be trusted"
            )
        return self


class OpcUaSorter(_Strict):
    """The line's sorter PLC is an OPC UA server."""

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    namespace_uri: str = "urn:cargogate:sorter"
    object_name: str | None = None
    """Name of the line's object and NodeId prefix; defaults to the line id."""
    security: OpcUaSecurity | None = None
    username: str | None = None
    password_env: str | None = None
    """Environment variable that holds the password."""
    password_file: Path | None = None
    """File whose first line is the password (alternative to ``password_env``)."""
    timeout_s: PositiveFloat = 2.0
    publishing_interval_ms: PositiveFloat = 10.0
    poll_s: PositiveFloat = 0.1
    """Fallback poll when no subscription notification arrives."""
    link: Link = Link()

    @field_validator("endpoint")
    @classmethod
    def _host_and_port(cls, endpoint: str) -> str:
        """Both are needed (client and emulator): caught by ``config check``, not at start."""
        host_port(endpoint)
        return endpoint

    @model_validator(mode="after")
    def _credentials_complete(self) -> OpcUaSorter:
        has_password = self.password_env is not None or self.password_file is not None
        if self.username is None and has_password:
            raise ValueError("password_env/password_file given without username")
        if self.username is not None and not has_password:
            raise ValueError("username needs password_env or password_file")
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        return self

    @model_validator(mode="after")
    def _warn_insecure(self) -> OpcUaSorter:
        """Said at load, so ``config check`` and the start of ``run`` show it, not only the
        connects (which warn too)."""
        if self.security is not None and self.security.insecure_accept_any_server_cert:
            log.warning(
                "sorter %s: security.insecure_accept_any_server_cert is true: the controller "
                "trusts whatever certificate answers at this endpoint, so anyone who can answer "
                "there is trusted; pin the PLC's certificate (server_certificate or "
                "server_certificate_sha256) outside a bench",
                self.endpoint,
            )
        return self

    def password(self) -> str | None:
        """The password from the named variable or file; :class:`SettingsError` if missing."""
        return _password(self.password_env, self.password_file)


class ModbusSorter(_Strict):
    """The line's sorter PLC is a Modbus TCP server (holding registers)."""

    type: Literal["modbus"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=0, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    register_base: int = Field(default=0, ge=0, le=65535)
    """Holding register address of the layout's first register (0-based, as on the wire)."""
    timeout_s: PositiveFloat = 0.2
    """Per request; keep timeout_s × (retries + 1) well inside the decision window."""
    retries: int = Field(default=1, ge=0, le=5)
    poll_s: PositiveFloat = 0.005
    link: Link = Link()

    @model_validator(mode="after")
    def _map_fits(self) -> ModbusSorter:
        end = self.register_base + self.link.layout().registers
        if end > 65536:
            raise ValueError(
                f"register map ends at {end - 1}, beyond 65535: lower register_base "
                f"({self.register_base}) or link.ring_size ({self.link.ring_size})"
            )
        return self


PlcSorterSettings = Annotated[OpcUaSorter | ModbusSorter, Field(discriminator="type")]
"""The wire sorter settings, by ``type``: add ``OpcUaSorter | ModbusSorter`` to the site
schema's sorter union."""


def _password(env: str | None, file: Path | None) -> str | None:
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SettingsError(f"password_env: environment variable {env!r} is not set")
        return value
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as exc:
            raise SettingsError(
                f"password_file: cannot read a password from {file}: {exc}"
            ) from None
    return None


def timing(link: Link, poll_s: float, prefetch_slots: int = 0) -> LinkTiming:
    return LinkTiming(
        poll_s=poll_s,
        prefetch_slots=prefetch_slots,
        heartbeat_period_s=link.heartbeat_period_s,
        heartbeat_timeout_s=link.heartbeat_timeout_s,
        backoff_initial_s=link.backoff_initial_s,
        backoff_max_s=link.backoff_max_s,
        clock_staleness_s=link.plc_clock_staleness_s,
    )


def host_port(endpoint: str) -> tuple[str, int]:
    url = urlparse(endpoint)
    try:
        port = url.port
    except ValueError as exc:  # not a number, or out of range
        raise SettingsError(f"endpoint {endpoint!r}: {exc}") from None
    if not url.hostname or port is None:
        raise SettingsError(f"endpoint {endpoint!r}: expected opc.tcp://HOST:PORT")
    return url.hostname, port
