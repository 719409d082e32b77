"""A toy risk feed: a folder of ``*.txt`` manifests, one ``HAWB|CHANNEL|SCORE|GOODS|FLIGHT``
record a line (goods and flight may be left out)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from controller.core.domain import RiskChannel, RiskResult
from controller.risk.records import FeedBatch, FeedProblem

HAWB = re.compile(r"[A-Za-z0-9-]{1,35}")


class PipeFeed:
    """A risk feed (``controller.risk.feeds.RiskFeed``): each fetch hands out the manifests
    not read before. It never raises: what is wrong comes back as a problem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: set[str] = set()

    async def fetch(self) -> FeedBatch:
        return await asyncio.to_thread(self._fetch)  # files are read off the event loop

    def _fetch(self) -> FeedBatch:
        if not self.folder.is_dir():
            problem = FeedProblem(str(self.folder), None, "", "", "folder not found")
            return FeedBatch([], [problem])
        results: list[RiskResult] = []
        problems: list[FeedProblem] = []
        for path in sorted(self.folder.glob("*.txt")):
            if path.name in self._read:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:  # tried again on the next fetch
                problems.append(FeedProblem(str(path), None, "", "", f"cannot read: {exc}"))
                continue
            self._read.add(path.name)
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    result = self._record(str(path), number, line, problems)
                    if result is not None:
                        results.append(result)
        return FeedBatch(results, problems)

    @staticmethod
    def _record(
        source: str, number: int, line: str, problems: list[FeedProblem]
    ) -> RiskResult | None:
        hawb, channel, score, goods, flight = [*line.split("|"), "", ""][:5]
        try:
            value = float(score)
        except ValueError:
            value = -1.0
        if not HAWB.fullmatch(hawb):
            problems.append(FeedProblem(source, number, "hawb", repr(hawb), "not a HAWB"))
        elif channel.upper() not in RiskChannel.__members__:
            problems.append(FeedProblem(source, number, "channel", repr(channel), "unknown"))
        elif not 0.0 <= value <= 1.0:
            problems.append(FeedProblem(source, number, "score", repr(score), "not in [0, 1]"))
        else:
            return RiskResult(hawb, RiskChannel(channel.upper()), value, goods, flight)
        return None
