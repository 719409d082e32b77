"""Builds the risk feeds a site file names (``risk_feeds``); registered in
:mod:`controller.risk.registration`."""

from __future__ import annotations

from controller.risk.feeds import FileFeed, HttpFeed
from controller.risk.settings import FileRiskFeed, HttpRiskFeed


def file_feed(settings: FileRiskFeed, ctx: object) -> FileFeed:
    """Registry factory of ``type: file``: a manifest file or a folder of them."""
    return FileFeed(settings.path)


def http_feed(settings: HttpRiskFeed, ctx: object) -> HttpFeed:
    """Registry factory of ``type: http``: a manifest service polled over HTTP(S)."""
    return HttpFeed(settings.url, timeout_s=settings.timeout_s)
