"""The site file's ``console`` section: where the console listens and how it treats browsers."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from controller.core.settings import Strict


class ConsoleSettings(Strict):
    """The web console and HTTP API, served by ``cargogate run`` itself (on by default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Where to listen; ``0.0.0.0`` for the hub's network (with TLS)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """0 picks a free port (tests)."""
    tls_cert: Path | None = None
    """PEM certificate file; with ``tls_key`` the console speaks HTTPS only and its session
    cookie is Secure."""
    tls_key: Path | None = None
    live_every_s: Annotated[float, Field(gt=0.05, le=60)] = 1.0
    """How often the live stream sends a fresh view to each browser."""
    live_clients: Annotated[int, Field(ge=1, le=10_000)] = 200
    """At most this many browsers on the live stream; more are refused (503)."""
    session_h: Annotated[float, Field(gt=0, le=24 * 7)] = 12.0
    """A login lasts this long (a shift), then the browser must log in again."""
    login_attempts_per_min: Annotated[int, Field(ge=1, le=1000)] = 5
    """Failed logins allowed per account from one address each minute (ten times that per
    address)."""
    allow_insecure_http: bool = False
    """Serve plain HTTP beyond this host (passwords and sessions in clear on the network):
    only behind a TLS-terminating proxy on the same host, or on a closed test bench."""

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if (
            self.enabled
            and not self.tls
            and not _loopback(self.host)
            and not self.allow_insecure_http
        ):
            raise ValueError(
                f"host {self.host!r} serves the hub's network: give tls_cert and tls_key "
                "(or allow_insecure_http: true behind a TLS proxy)"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
