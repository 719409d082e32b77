"""Site-file settings for the risk feeds: where pre-computed risk results come from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, field_validator

from controller.core.settings import Strict


class FileRiskFeed(Strict):
    type: Literal["file"]
    path: Path
    """A manifest file, or a folder of them (read; relative to the site file's folder)."""
    poll_s: PositiveFloat = 5.0


class HttpRiskFeed(Strict):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    poll_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 5.0

    @field_validator("url")
    @classmethod
    def _a_host_and_port(cls, url: str) -> str:
        """Caught by ``config check``, not by the first fetch."""
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for a port that is not a number or out of range
        except ValueError as exc:
            raise ValueError(f"not a usable URL: {exc}") from None
        if not parts.hostname:
            raise ValueError("name the host: https://host[:port]/path")
        if port == 0:
            raise ValueError("port 0 is not a TCP port to fetch from (1-65535)")
        return url


RiskFeedSettings = Annotated[FileRiskFeed | HttpRiskFeed, Field(discriminator="type")]
