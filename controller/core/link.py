"""The state of an adapter's link to the outside world, readable without touching its client.

Every adapter with a connection (a sorter PLC, the central database, a risk feed, the
inference session) keeps one :class:`LinkState` up to date as it connects, fails and
recovers, so the live view, health checks and tests read a plain attribute instead of asking
a library client that may be mid-reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol


class LinkState(StrEnum):
    """Where an adapter's link stands, from the site's point of view."""

    CONNECTING = "connecting"
    """Not up yet: the first connect (or start-up) has not succeeded so far."""
    UP = "up"
    """Working as specified."""
    DEGRADED = "degraded"
    """Connected, but impaired (a stalled PLC heartbeat, a restarting session, some feeds
    failing): decisions still flow, someone should look."""
    DOWN = "down"
    """Lost (or closed): the adapter retries by itself where it can."""

    @staticmethod
    def combine(states: Iterable[LinkState]) -> LinkState:
        """One state for several links: up only if all are up, down only if all are down;
        no links at all count as up (nothing is missing)."""
        seen = set(states)
        if not seen or seen == {LinkState.UP}:
            return LinkState.UP
        if seen == {LinkState.DOWN}:
            return LinkState.DOWN
        if seen <= {LinkState.CONNECTING, LinkState.DOWN}:
            return LinkState.CONNECTING if LinkState.CONNECTING in seen else LinkState.DOWN
        return LinkState.DEGRADED


class Linked(Protocol):
    """An adapter that reports its link state (a plain attribute or a cheap property)."""

    @property
    def link_state(self) -> LinkState: ...
