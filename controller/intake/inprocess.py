"""The scanner played in this process: the twin or a stand-in pushes arrays straight in."""

from __future__ import annotations

from typing import Any

from controller.core.clock import Clock, MonotonicClock
from controller.core.ports import ScanImage
from controller.intake.matcher import ImageMatcher


class InProcessScanner:
    """Push images by HAWB or tracking id; they reach the matcher at once, on the loop."""

    def __init__(
        self,
        matcher: ImageMatcher,
        *,
        line: str | None = None,
        clock: Clock | None = None,
        name: str = "inprocess",
    ) -> None:
        self.matcher = matcher
        self.line = line
        self.clock: Clock = clock or MonotonicClock()
        self.name = name

    def push(
        self,
        pixels: Any,
        *,
        hawb: str = "",
        tracking_id: int | None = None,
        error: str | None = None,
    ) -> ScanImage:
        """Hand over one image (None pixels with ``error`` for an unreadable one)."""
        image = ScanImage(
            hawb=hawb,
            tracking_id=tracking_id,
            source=self.name,
            received_at=self.clock.now(),
            pixels=pixels,
            error=error if pixels is None else None,
        )
        self.matcher.deliver(image, self.line)
        return image

    async def run(self) -> None:
        """Nothing to poll; present so every intake source runs the same way."""
