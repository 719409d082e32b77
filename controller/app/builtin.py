"""The adapters a site has when it has none (no X-ray source, no review room), and the
console's review station.

Registered through the entry point ``builtin`` like every other plugin (see
:mod:`controller.app.registry`), so the site schema's defaults (``xray: {type: none}``,
``review: {type: none}``) come from the registry too.
"""

from __future__ import annotations

from typing import Literal

from controller.console.review import StationReviewSettings
from controller.core.domain import XrayResult, XrayStatus
from controller.core.settings import Strict


class NoXray(Strict):
    """No on-site inference: every parcel has XRAY_MISSING and goes to inspection."""

    type: Literal["none"] = "none"


class NoReview(Strict):
    """No on-screen review room: parcels that would need a review go to inspection."""

    type: Literal["none"] = "none"


class NoImages:
    """The X-ray port when no scanner is configured: every parcel lacks an image."""

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult.fault(XrayStatus.MISSING, "no X-ray source configured")


def no_xray(settings: NoXray, ctx: object) -> NoImages:
    """Factory of ``xray: {type: none}``."""
    return NoImages()


def no_review(settings: NoReview, ctx: object) -> None:
    """Factory of ``review: {type: none}``: the controller runs without a review room."""


ADAPTERS = [
    {"kind": "xray", "type": "none", "settings": NoXray, "factory": f"{__name__}:no_xray"},
    {"kind": "review", "type": "none", "settings": NoReview, "factory": f"{__name__}:no_review"},
    {
        "kind": "review",
        "type": "station",
        "settings": StationReviewSettings,
        "factory": "controller.console.review:station_review",
    },
]
