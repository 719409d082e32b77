"""Site-file settings for the risk feeds: where pre-computed risk results come from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat

from controller.core.settings import Strict


class FileRiskFeed(Strict):
    type: Literal["file"]
    path: Path
    poll_s: PositiveFloat = 5.0


class HttpRiskFeed(Strict):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    poll_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 5.0


RiskFeedSettings = Annotated[FileRiskFeed | HttpRiskFeed, Field(discriminator="type")]
