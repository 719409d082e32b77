"""The conformance kit's fixture for the toy pipe feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pipe_feed import PipeFeed

from controller.conformance.harness import ManifestRecord, RiskContext


@dataclass
class PipeFeedHarness:
    folder: Path
    feed: PipeFeed
    files: int = 0

    async def publish(self, records: Sequence[ManifestRecord]) -> list[int]:
        """Drop a new manifest file; record N sits on line N."""
        self.files += 1
        text = "".join(
            f"{r.hawb}|{r.channel}|{r.score}|{r.declared_goods}|{r.flight}\n" for r in records
        )
        path = self.folder / f"manifest-{self.files}.txt"
        hidden = self.folder / f".manifest-{self.files}.part"  # not *.txt: the feed skips it
        await asyncio.to_thread(hidden.write_text, text, encoding="utf-8")
        await asyncio.to_thread(hidden.rename, path)
        return list(range(1, len(records) + 1))

    async def outage(self, down: bool) -> None:
        """The folder goes away (a share unmounted) and comes back."""
        away = self.folder.with_name("away")
        source, target = (self.folder, away) if down else (away, self.folder)
        await asyncio.to_thread(source.rename, target)


class PipeFeedKit:
    checklist = Path(__file__).with_name("risk-pipe.conformance.toml")

    @asynccontextmanager
    async def open(self, ctx: RiskContext) -> AsyncIterator[PipeFeedHarness]:
        folder = ctx.folder / "manifests"
        folder.mkdir()
        yield PipeFeedHarness(folder, PipeFeed(folder))


@pytest.fixture
def cargogate_risk() -> PipeFeedKit:
    return PipeFeedKit()
