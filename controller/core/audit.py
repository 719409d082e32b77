"""The audit trail as people search it: queries and records, whatever database holds them.

Track and trace, the alarm history and the supervisors' audit search all read the journal
through :class:`controller.core.ports.AuditLog`; these are the values that cross that port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.core.domain import EntryKind

MAX_LIMIT = 10_000
"""The most records one search returns, whatever ``limit`` asks for."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Every field narrows the search; None (or empty) leaves it open. Results come newest
    first, at most ``limit`` of them, skipping the first ``offset``."""

    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[EntryKind, ...] = ()
    line: str | None = None
    hawb: str | None = None
    tracking_id: int | None = None
    reason: int | None = None
    """A reason code: only entries that carry it."""
    user: str | None = None
    """Only operator commands given by this user."""
    text: str | None = None
    """A substring of the entry's data (an alarm's source or message, a note)."""
    before_seq: int | None = None
    """Only entries older than this sequence number: pages that stay put while the journal
    grows (take the last record's ``seq`` for the next page)."""
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One journal entry, with its sequence number and the wall time it was written."""

    seq: int
    wall_time: datetime
    ts: float
    kind: EntryKind
    line: str
    tracking_id: int
    hawb: str
    state_from: str
    state_to: str
    destination: str
    lane: int | None
    reasons: tuple[int, ...]
    policy_version: str
    data: Mapping[str, object] = field(default_factory=dict)

    @property
    def user(self) -> str:
        """Who gave the command ("" for what the controller did by itself)."""
        user = self.data.get("user", "")
        return user if isinstance(user, str) else ""


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: tuple[AuditRecord, ...]
    total: int
    """How many entries match the query in all (``records`` is one page of them)."""
