"""Customs risk results: feeds that load them ahead of arrival, and the in-memory book the
policy reads at scan time. Feed formats are described in :mod:`controller.risk.records`."""

from __future__ import annotations

from controller.risk.book import RiskBook
from controller.risk.feeds import FileFeed, HttpFeed, RiskFeed
from controller.risk.records import (
    FeedBatch,
    FeedProblem,
    FeedRecord,
    parse_csv,
    parse_json,
    parse_json_page,
)
from controller.risk.settings import FileRiskFeed, HttpRiskFeed

__all__ = [
    "FeedBatch",
    "FeedProblem",
    "FeedRecord",
    "FileFeed",
    "HttpFeed",
    "RiskBook",
    "RiskFeed",
    "feed_from_settings",
    "parse_csv",
    "parse_json",
    "parse_json_page",
]


def feed_from_settings(settings: FileRiskFeed | HttpRiskFeed) -> RiskFeed:
    """The feed a site file's ``risk_feeds`` entry describes (its ``poll_s`` is the caller's)."""
    if isinstance(settings, FileRiskFeed):
        return FileFeed(settings.path)
    return HttpFeed(settings.url, timeout_s=settings.timeout_s)
