"""Live KPIs: the share of parcels cleared within the target, and counts by lane and reason.

A parcel's 150-second verdict is known at the first of two moments: when it clears (a hit if
within the target) or when the target passes without clearance (a miss). Rolling windows count
verdicts by that moment, so the live figure never waits for slow inspections to finish.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from controller.core.reasons import Reason
from controller.core.views import KpiView, Share


@dataclass(slots=True)
class _Window:
    span_s: float
    events: deque[tuple[float, bool]] = field(default_factory=deque)
    hits: int = 0

    def add(self, when: float, hit: bool) -> None:
        self.events.append((when, hit))
        self.hits += hit

    def trim(self, now: float) -> None:
        while self.events and self.events[0][0] < now - self.span_s:
            _, hit = self.events.popleft()
            self.hits -= hit

    def share(self) -> float | None:
        return self.hits / len(self.events) if self.events else None


class Kpis:
    """Counters for one controller (all lines). Call :meth:`tick` to age pending verdicts."""

    def __init__(self, target_s: float = 150.0, windows_s: tuple[float, ...] = (300.0,)) -> None:
        self.target_s = target_s
        t = f"{target_s:g}"
        self.bucket_names = (f"<={t}s", f"{t}-{2 * target_s:g}s", f">{2 * target_s:g}s")
        self._windows = [_Window(w) for w in windows_s]
        self._pending: dict[tuple[str, int, float], float] = {}  # key -> arrival
        self._by_hour: dict[int, list[int]] = {}  # hour -> [hits, misses]
        self._by_line: dict[str, list[int]] = {}
        self._expiry: deque[tuple[float, tuple[str, int, float]]] = deque()
        self.hits = 0
        self.misses = 0
        self.buckets: Counter[str] = Counter()
        self.by_lane: Counter[tuple[str, int]] = Counter()
        self.by_reason: Counter[Reason] = Counter()
        self.by_state: Counter[str] = Counter()
        self.decisions = 0
        self.deadline_misses = 0
        self.recirculations = 0
        self.illegal_transitions = 0

    def arrived(self, line: str, tracking_id: int, arrived_at: float) -> None:
        key = (line, tracking_id, arrived_at)
        self._pending[key] = arrived_at
        self._expiry.append((arrived_at + self.target_s, key))

    def cleared(self, line: str, tracking_id: int, arrived_at: float, now: float) -> None:
        elapsed = now - arrived_at
        self.buckets[self._bucket(elapsed)] += 1
        if self._pending.pop((line, tracking_id, arrived_at), None) is not None:
            self._verdict(line, now, hit=elapsed <= self.target_s)

    def closed(self, state: str) -> None:
        self.by_state[state] += 1

    def decided(self, line: str, lane: int, reasons: tuple[Reason, ...]) -> None:
        self.decisions += 1
        self.by_lane[(line, lane)] += 1
        self.by_reason.update(reasons)

    def tick(self, now: float) -> None:
        """Record a miss for every parcel whose target passed uncleared; trim the windows."""
        while self._expiry and self._expiry[0][0] < now:
            due, key = self._expiry.popleft()
            if self._pending.pop(key, None) is not None:
                self._verdict(key[0], due, hit=False)
        for window in self._windows:
            window.trim(now)

    def share_within_target(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def view(self, now: float) -> KpiView:
        """The figures at ``now`` (pending verdicts aged first), as a frozen read model."""
        self.tick(now)
        return KpiView(
            target_s=self.target_s,
            overall=Share(self.hits, self.misses),
            rolling={
                f"{w.span_s:g}s": Share(w.hits, len(w.events) - w.hits) for w in self._windows
            },
            by_hour={hour: Share(*n) for hour, n in sorted(self._by_hour.items())},
            by_line={line: Share(*n) for line, n in sorted(self._by_line.items())},
            buckets={b: self.buckets[b] for b in self.bucket_names},
            by_lane={f"{line}/{lane}": n for (line, lane), n in sorted(self.by_lane.items())},
            by_reason={r.name: n for r, n in self.by_reason.most_common()},
            by_state={str(state): n for state, n in self.by_state.items()},
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
        else:
            self.misses += 1
        self._by_hour.setdefault(int(when // 3600), [0, 0])[not hit] += 1
        self._by_line.setdefault(line, [0, 0])[not hit] += 1
        for window in self._windows:
            window.add(when, hit)

    def _bucket(self, elapsed: float) -> str:
        if elapsed <= self.target_s:
            return self.bucket_names[0]
        return self.bucket_names[1] if elapsed <= 2 * self.target_s else self.bucket_names[2]
