"""The site file's ``events`` section: the MQTT broker the site's events are published to.

Checked when the file loads (``cargogate config check``), each problem at its path: a broker
named as a URL, a port out of range, a topic prefix MQTT would read as a wildcard, a CA file
that holds no certificate, a password without a user name. The environment variable
``password_env`` names, and the CA file's presence, are checked with every other one
(:mod:`controller.app.preflight`).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from controller.core.settings import Strict

MQTT_PORT = 1883
MQTTS_PORT = 8883


class MqttEventsSettings(Strict):
    """Where and how the publisher reaches the broker (docs/events.md)."""

    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1, max_length=253)
    """The broker's host name or address (not a URL)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 1883, or 8883 with ``tls``."""
    tls: bool = False
    """Connect over TLS, checking the broker's certificate and host name."""
    ca_file: Path | None = None
    """PEM file of the CA that signed the broker's certificate (default: the system's CAs)."""
    username: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, min_length=1)
    """The environment variable holding the password (never the password itself)."""
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")
    """Default ``cargogate-<site id>``. Must be unique on the broker: a second client with the
    same id takes the connection over."""
    topic_prefix: str = Field(default="cargogate", min_length=1, max_length=200)
    kpi_every_s: float = Field(default=10.0, ge=0.5, le=3600)
    """How often the site's KPIs are published."""

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return MQTTS_PORT if self.tls else MQTT_PORT

    @field_validator("host")
    @classmethod
    def _a_host_not_a_url(cls, host: str) -> str:
        if "://" in host:
            raise ValueError("a host name or address, not a URL (the port goes in 'port')")
        if re.search(r"[\s/]", host):
            raise ValueError("a host name or address: no spaces or slashes")
        return host

    @field_validator("topic_prefix")
    @classmethod
    def _a_topic_prefix(cls, prefix: str) -> str:
        """MQTT would read ``+`` and ``#`` as wildcards and hide ``$`` topics from ``#``."""
        if any(c in prefix for c in "+#\x00"):
            raise ValueError("no '+', '#' or NUL: MQTT reads them as wildcards")
        if prefix.startswith("$"):
            raise ValueError("must not start with '$' (topics the broker keeps for itself)")
        if "" in prefix.split("/"):
            raise ValueError("levels separated by single '/', none empty, none at either end")
        return prefix

    @field_validator("ca_file")
    @classmethod
    def _a_ca_certificate(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """A file that is there must hold a certificate; a missing one is reported with the
        site's other missing files."""
        if path is None:
            return None
        if not info.data.get("tls", True):  # an invalid tls is reported already
            raise ValueError("a CA file is for TLS: set tls: true")
        if not path.is_file():
            return path
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ValueError(f"no PEM CA certificate in it ({exc})") from None
        return path

    @field_validator("password_env")
    @classmethod
    def _with_a_user(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and info.data.get("username", "") is None:
            raise ValueError("a password needs a user: set username")
        return name
