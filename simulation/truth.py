"""Ground truth for generated parcels: arrivals, goods, hidden contraband, manifest risk and
what the X-ray detector would score.

Draws are vectorised with numpy per line in chunks, so a day of parcels costs little; every
stream is seeded from the scenario seed and the line's index, so the same seed gives the
same parcels whatever else changes in the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from controller.core.domain import RiskChannel, RiskResult
from controller.core.settings import SiteCore
from simulation.scenario import Scenario

CHUNK = 4096
_NORMAL = NormalDist()
_RED, _YELLOW, _GREEN = RiskChannel.RED, RiskChannel.YELLOW, RiskChannel.GREEN

# A risk result per parcel, built from all its fields without the named tuple's __new__ (as
# the tracker builds its values, see controller.core.tracker).
if TYPE_CHECKING:

    def _risk(fields: tuple[str, RiskChannel, float, str, str], /) -> RiskResult: ...

else:
    _risk = partial(tuple.__new__, RiskResult)


@dataclass(slots=True)
class ParcelSpec:
    """Everything the plant knows about one parcel before it is inducted (never shown to the
    controller except through its ports: the barcode, the risk book, the detector)."""

    pid: int
    line: str
    arrival_s: float
    hawb: str
    source: str  # flight id or stream name
    goods: str
    contraband: str | None
    risk: RiskResult | None
    scores: dict[str, float]
    read_fault: str = ""  # set by a replay: the recorded first read failed


@dataclass(frozen=True, slots=True)
class LineArrivals:
    """One line's arrival times (sorted, seconds) and the index of each arrival's source."""

    line: str
    times: np.ndarray
    sources: np.ndarray


def arrival_schedule(scenario: Scenario, site: SiteCore) -> tuple[list[LineArrivals], list[str]]:
    """Arrival times per line for every flight and steady stream before the horizon, and
    the source names."""
    rng = np.random.default_rng([scenario.seed, 0])
    ids = [line.id for line in site.lines]
    times: dict[str, list[np.ndarray]] = {line: [] for line in ids}
    sources: dict[str, list[np.ndarray]] = {line: [] for line in ids}
    names: list[str] = []
    for flight in scenario.arrivals.flights:
        start = flight.at_h * 3600
        t = start + rng.uniform(0, flight.unload_min * 60, flight.parcels)
        _assign(rng, t, flight.lines or ids, len(names), times, sources)
        names.append(flight.id)
    for i, stream in enumerate(scenario.arrivals.steady):
        span = (stream.to_h - stream.from_h) * 3600
        n = int(rng.poisson(stream.parcels_per_h * (stream.to_h - stream.from_h)))
        t = stream.from_h * 3600 + rng.uniform(0, span, n)
        _assign(rng, t, stream.lines or ids, len(names), times, sources)
        names.append(f"steady-{i + 1}")
    out = []
    horizon_s = scenario.horizon_h * 3600
    for line in ids:
        t = np.concatenate(times[line]) if times[line] else np.empty(0)
        s = np.concatenate(sources[line]) if sources[line] else np.empty(0, dtype=np.int32)
        keep = t < horizon_s  # arrivals after the horizon are not part of this run
        t, s = t[keep], s[keep]
        order = np.argsort(t, kind="stable")
        out.append(LineArrivals(line, t[order], s[order]))
    return out, names


def _assign(
    rng: np.random.Generator,
    t: np.ndarray,
    lines: Sequence[str],
    source: int,
    times: dict[str, list[np.ndarray]],
    sources: dict[str, list[np.ndarray]],
) -> None:
    which = rng.integers(0, len(lines), t.size)
    for k, line in enumerate(lines):
        picked = t[which == k]
        times[line].append(picked)
        sources[line].append(np.full(picked.size, source, dtype=np.int32))


def induction_times(arrivals: np.ndarray, max_per_h: float) -> np.ndarray:
    """FIFO induction with a deterministic gap of 3600/max_per_h seconds (Lindley recursion,
    vectorised): inducted_i = max(arrival_i, inducted_(i-1) + gap)."""
    if arrivals.size == 0:
        return arrivals.copy()
    gap = 3600.0 / max_per_h
    k = np.arange(arrivals.size) * gap
    inducted: np.ndarray = np.maximum.accumulate(arrivals - k) + k
    return inducted


class TruthModel:
    """Makes :class:`ParcelSpec` values for one line, in arrival order, chunk by chunk."""

    def __init__(self, scenario: Scenario, line_index: int, line: str, first_pid: int) -> None:
        self.s = scenario
        self.line = line
        self.rng = np.random.default_rng([scenario.seed, 1, line_index])
        self.next_pid = first_pid
        truth = scenario.truth
        self.goods = list(truth.goods)
        weights = np.array([g.share for g in truth.goods.values()])
        self.goods_p = weights / weights.sum()
        self.goods_contains = [set(g.contains) for g in truth.goods.values()]
        self.mix = list(truth.contraband_mix)
        mix_w = np.array(list(truth.contraband_mix.values()) or [1.0])
        self.mix_p = mix_w / mix_w.sum()
        self.classes = list(scenario.detector.classes)
        m = scenario.manifest
        p = truth.contraband_rate
        self.sigma_t = float(np.sqrt(p * (1 - p))) or 1.0
        self.red_z = _NORMAL.inv_cdf(1 - m.red_rate) if m.red_rate > 0 else float("inf")
        yellow = m.red_rate + m.yellow_rate
        self.yellow_z = _NORMAL.inv_cdf(1 - yellow) if yellow > 0 else float("inf")

    def specs(
        self, times: np.ndarray, sources: np.ndarray, names: list[str]
    ) -> Iterator[ParcelSpec]:
        for start in range(0, times.size, CHUNK):
            yield from self._chunk(
                times[start : start + CHUNK], sources[start : start + CHUNK], names
            )

    def _chunk(
        self, times: np.ndarray, sources: np.ndarray, names: list[str]
    ) -> Iterator[ParcelSpec]:
        s, rng, n = self.s, self.rng, times.size
        bad = rng.random(n) < s.truth.contraband_rate
        kind = rng.choice(len(self.mix), size=n, p=self.mix_p) if self.mix else np.zeros(n, int)
        goods = rng.choice(len(self.goods), size=n, p=self.goods_p)
        covered = rng.random(n) < s.manifest.coverage
        rho = s.manifest.correlation
        p = s.truth.contraband_rate
        standard = (bad.astype(float) - p) / self.sigma_t
        z = rho * standard + np.sqrt(1 - rho * rho) * rng.standard_normal(n)
        absent = [rng.beta(d.absent.a, d.absent.b, n).tolist() for d in s.detector.classes.values()]
        present = [
            rng.beta(d.present.a, d.present.b, n).tolist() for d in s.detector.classes.values()
        ]
        bad_l, kind_l, goods_l = bad.tolist(), kind.tolist(), goods.tolist()
        covered_l, z_l, times_l, sources_l = (
            covered.tolist(),
            z.tolist(),
            times.tolist(),
            sources.tolist(),
        )
        # Read into locals once per chunk: the loop below runs per parcel.
        line, goods_names, mix, contains = self.line, self.goods, self.mix, self.goods_contains
        names_classes = self.classes
        classes = list(enumerate(names_classes))
        red_z, yellow_z, offset = self.red_z, self.yellow_z, s.manifest.score_offset
        cdf = _NORMAL.cdf
        pid = self.next_pid
        self.next_pid += n
        for i in range(n):
            hawb = f"{line}-{pid:09d}"
            contraband = mix[kind_l[i]] if bad_l[i] else None
            shows = contains[goods_l[i]]
            scores = {
                c: (present[k][i] if (c == contraband or c in shows) else absent[k][i])
                for k, c in classes
            }
            good = goods_names[goods_l[i]]
            source = names[sources_l[i]]
            risk = None
            if covered_l[i]:
                zi = z_l[i]
                channel = _RED if zi >= red_z else _YELLOW if zi >= yellow_z else _GREEN
                risk = _risk((hawb, channel, round(cdf(zi - offset), 4), good, source))
            yield ParcelSpec(
                pid,
                line,
                times_l[i],
                hawb,
                source,
                good,
                contraband,
                risk,
                scores,
            )
            pid += 1
