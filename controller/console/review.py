"""The review station as the controller's review queue: officers answer in the console.

A parcel sent for review waits here until its cutoff. The officer's verdict does not come
back through this object: it is an operator command (``RecordVerdict``), journalled with who
gave it, that settles the parcel and cancels the wait. The queue the officers see is the
controller's read model of parcels awaiting review, least time left first.
"""

from __future__ import annotations

import asyncio
from typing import Literal, NoReturn

from controller.core.domain import ReviewOutcome
from controller.core.ports import ReviewRequest
from controller.core.settings import Strict


class StationReviewSettings(Strict):
    """``review: {type: station}``: officers review in the console's review station."""

    type: Literal["station"]


class StationReview:
    """Implements :class:`controller.core.ports.ReviewQueue` by waiting for the officer."""

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        return await _forever()


async def _forever() -> NoReturn:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def station_review(settings: StationReviewSettings, ctx: object) -> StationReview:
    """Factory of ``review: {type: station}``."""
    return StationReview()
