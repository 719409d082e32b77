"""Live KPIs: the share of parcels cleared within the target, and counts by lane and reason.

A parcel's 150-second verdict is known at the first of two moments: when it clears (a hit if
within the target) or when the target passes without clearance (a miss). Rolling windows count
verdicts by that moment, so the live figure never waits for slow inspections to finish.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from controller.core.reasons import Reason
from controller.core.views import KpiView, Share


@dataclass(slots=True)
class _Window:
    """A rolling window: the verdicts of the log from its ``start`` on (an index counted from
    the first verdict ever logged), trimmed by :meth:`Kpis.tick`."""

    span_s: float
    start: int = 0


class Kpis:
    """Counters for one controller (all lines). Call :meth:`tick` to age pending verdicts."""

    def __init__(self, target_s: float = 150.0, windows_s: tuple[float, ...] = (300.0,)) -> None:
        self.target_s = target_s
        t = f"{target_s:g}"
        self.bucket_names = (f"<={t}s", f"{t}-{2 * target_s:g}s", f">{2 * target_s:g}s")
        self._windows = [_Window(w) for w in windows_s]
        # The verdicts every window draws on, logged once rather than once per window: when
        # each came, and the hits so far (_log_hits[i] counts the hits before the i-th kept
        # verdict), so a window's hits are a difference, with no count kept per window.
        self._log_when: list[float] = []
        self._log_hits: list[int] = [0]
        self._log_first = 0  # index, counted from the first verdict ever, of _log_when[0]
        self._pending: dict[tuple[str, int, float], float] = {}  # key -> arrival
        self._by_hour: dict[int, list[int]] = {}  # hour -> [hits, misses]
        self._by_line: dict[str, list[int]] = {}
        self._expiry: deque[tuple[float, tuple[str, int, float]]] = deque()
        self.hits = 0
        self.misses = 0
        # Plain dicts, read out as Counters: storing into a dict subclass such as Counter
        # takes twice as long, and these count every parcel.
        self._buckets: dict[str, int] = {}
        self.cleared_s_sum = 0.0
        """The clearance times of every cleared parcel, summed (a histogram's sum)."""
        self._by_lane: dict[tuple[str, int], int] = {}
        self._by_reason: dict[Reason, int] = {}
        self._by_state: dict[str, int] = {}
        self.decisions = 0
        self.deadline_misses = 0
        self.recirculations = 0
        self.illegal_transitions = 0

    @property
    def buckets(self) -> Counter[str]:
        """Cleared parcels by clearance time (keys: :attr:`bucket_names`)."""
        return Counter(self._buckets)

    @property
    def by_lane(self) -> Counter[tuple[str, int]]:
        """Decisions by (line, lane)."""
        return Counter(self._by_lane)

    @property
    def by_reason(self) -> Counter[Reason]:
        """Decisions by reason (every reason of each decision)."""
        return Counter(self._by_reason)

    @property
    def by_state(self) -> Counter[str]:
        """Closed parcels by final state."""
        return Counter(self._by_state)

    def arrived(self, line: str, tracking_id: int, arrived_at: float) -> None:
        key = (line, tracking_id, arrived_at)
        self._pending[key] = arrived_at
        self._expiry.append((arrived_at + self.target_s, key))

    def cleared(self, line: str, tracking_id: int, arrived_at: float, now: float) -> None:
        elapsed, target, names = now - arrived_at, self.target_s, self.bucket_names
        bucket = names[0] if elapsed <= target else names[1] if elapsed <= 2 * target else names[2]
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        self.cleared_s_sum += elapsed
        if self._pending.pop((line, tracking_id, arrived_at), None) is not None:
            self._verdict(line, now, elapsed <= target)

    def closed(self, state: str) -> None:
        self._by_state[state] = self._by_state.get(state, 0) + 1

    def decided(self, line: str, lane: int, reasons: tuple[Reason, ...]) -> None:
        self.decisions += 1
        key = (line, lane)
        self._by_lane[key] = self._by_lane.get(key, 0) + 1
        by_reason = self._by_reason
        for reason in reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1

    def tick(self, now: float) -> None:
        """Record a miss for every parcel whose target passed uncleared; trim the windows."""
        expiry, pending = self._expiry, self._pending
        while expiry and expiry[0][0] < now:
            due, key = expiry.popleft()
            if pending.pop(key, None) is not None:
                self._verdict(key[0], due, hit=False)
        self._trim(now)

    def share_within_target(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def view(self, now: float) -> KpiView:
        """The figures at ``now`` (pending verdicts aged first), as a frozen read model."""
        self.tick(now)
        return KpiView(
            target_s=self.target_s,
            overall=Share(self.hits, self.misses),
            rolling={f"{w.span_s:g}s": self._window_share(w) for w in self._windows},
            by_hour={hour: Share(*n) for hour, n in sorted(self._by_hour.items())},
            by_line={line: Share(*n) for line, n in sorted(self._by_line.items())},
            buckets={b: self._buckets.get(b, 0) for b in self.bucket_names},
            cleared_s_sum=self.cleared_s_sum,
            by_lane={f"{line}/{lane}": n for (line, lane), n in sorted(self._by_lane.items())},
            by_reason={r.name: n for r, n in self.by_reason.most_common()},
            by_state={str(state): n for state, n in self._by_state.items()},
            pending=len(self._pending),
            decisions=self.decisions,
            deadline_misses=self.deadline_misses,
            recirculations=self.recirculations,
            illegal_transitions=self.illegal_transitions,
        )

    def snapshot(self, now: float) -> dict[str, object]:
        """:meth:`view` as plain JSON data."""
        return self.view(now).as_dict()

    def _verdict(self, line: str, when: float, hit: bool) -> None:
        if hit:
            self.hits += 1
            column = 0  # [hits, misses]
        else:
            self.misses += 1
            column = 1
        # get-then-insert rather than setdefault, which would build a list per verdict
        hour = int(when // 3600)
        if (counts := self._by_hour.get(hour)) is None:
            counts = self._by_hour[hour] = [0, 0]
        counts[column] += 1
        if (counts := self._by_line.get(line)) is None:
            counts = self._by_line[line] = [0, 0]
        counts[column] += 1
        if self._windows:
            self._log_when.append(when)
            self._log_hits.append(self.hits)

    def _trim(self, now: float) -> None:
        """Move each window's start past the verdicts older than its span (up to the first
        verdict that is not, as verdicts are logged in the order they are known), then drop
        the verdicts no window holds any more."""
        when, first = self._log_when, self._log_first
        for window in self._windows:
            i, oldest = window.start - first, now - window.span_s
            while i < len(when) and when[i] < oldest:
                i += 1
            window.start = first + i
        if self._windows:
            unused = min(window.start for window in self._windows) - first
            if unused > 4096 and 2 * unused > len(when):  # drop in bulk: amortised O(1)
                del when[:unused]
                del self._log_hits[:unused]
                self._log_first = first + unused

    def _window_share(self, window: _Window) -> Share:
        kept = window.start - self._log_first
        verdicts = len(self._log_when) - kept
        hits = self._log_hits[-1] - self._log_hits[kept]
        return Share(hits, verdicts - hits)
