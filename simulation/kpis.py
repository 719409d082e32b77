"""Key figures of one twin run, computed from the plant's per-parcel records.

Speed (share cleared within the target, by hour, line and lane; queues; utilisation) and
security (contraband intercepted, held at exception or released; clean parcels inspected)
from what physically happened, beside the controller's own live KPIs for comparison.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.core.lifecycle import ParcelState
from controller.core.policy import DecisionPolicy
from simulation.plant import RECORD_FIELDS
from simulation.run import TwinRun

CLEARED = (ParcelState.RELEASED.value, ParcelState.CLEARED_AFTER_INSPECTION.value)
INSPECTED = (
    ParcelState.CLEARED_AFTER_INSPECTION.value,
    ParcelState.SEIZED.value,
    ParcelState.REFERRED.value,
)
_COL = {name: i for i, name in enumerate(RECORD_FIELDS)}


@dataclass(frozen=True)
class Columns:
    """The records as numpy columns (one entry per closed parcel)."""

    line: np.ndarray
    lane: np.ndarray
    state: np.ndarray
    contraband: np.ndarray
    arrival_s: np.ndarray
    inducted_s: np.ndarray
    closed_s: np.ndarray
    clearance_s: np.ndarray  # NaN where not cleared
    cleared: np.ndarray
    inspected: np.ndarray
    laps: np.ndarray

    @classmethod
    def of(cls, records: list[tuple[Any, ...]]) -> Columns:
        def col(name: str, dtype: Any = object) -> np.ndarray:
            i = _COL[name]
            return np.array([r[i] for r in records], dtype=dtype)

        state = col("state")
        cleared = np.isin(state, CLEARED)
        inducted = col("inducted_s", float)
        closed = col("closed_s", float)
        return cls(
            line=col("line"),
            lane=np.array([f"{r[_COL['line']]}/{r[_COL['lane']]}" for r in records], dtype=object),
            state=state,
            contraband=col("contraband"),
            arrival_s=col("arrival_s", float),
            inducted_s=inducted,
            closed_s=closed,
            clearance_s=np.where(cleared, closed - inducted, np.nan),
            cleared=cleared,
            inspected=np.isin(state, INSPECTED),
            laps=col("laps", int),
        )


def within_share(cols: Columns, target_s: float, mask: np.ndarray | None = None) -> float | None:
    """Share of parcels (in ``mask``) cleared within ``target_s`` of induction."""
    sel = np.ones(cols.state.size, bool) if mask is None else mask
    n = int(sel.sum())
    if n == 0:
        return None
    hits = sel & cols.cleared & (cols.clearance_s <= target_s)
    return float(hits.sum()) / n


def compute_kpis(run: TwinRun) -> dict[str, Any]:
    """Every figure the report shows, JSON-ready."""
    bundle, plant = run.bundle, run.plant
    target = bundle.site.clearance.target_s
    cols = Columns.of(run.records)
    n = cols.state.size
    hours = np.floor(cols.inducted_s / 3600).astype(int) if n else np.array([], int)
    by_hour = {
        int(h): {
            "parcels": int((hours == h).sum()),
            "share_within_target": within_share(cols, target, hours == h),
        }
        for h in np.unique(hours)
    }
    by_line = {
        str(line): within_share(cols, target, cols.line == line) for line in np.unique(cols.line)
    }
    by_lane = {
        str(lane): {
            "parcels": int((cols.lane == lane).sum()),
            "share_within_target": within_share(cols, target, cols.lane == lane),
        }
        for lane in np.unique(cols.lane)
    }
    bad = cols.contraband != ""
    security = {
        "contraband_parcels": int(bad.sum()),
        "intercepted_at_inspection": int((bad & cols.inspected).sum()),
        "held_at_exception": int((bad & (cols.state == ParcelState.EXCEPTION.value)).sum()),
        "missed_released": int((bad & (cols.state == ParcelState.RELEASED.value)).sum()),
        "clean_parcels_inspected": int((~bad & cols.inspected).sum()),
        "clean_inspection_rate": _ratio(int((~bad & cols.inspected).sum()), int((~bad).sum())),
        "clean_inspected_by_first_reason": dict(
            Counter(
                str(r[_COL["reasons"]]).split("|")[0] or "(none)"
                for r, flag in zip(run.records, ~bad & cols.inspected, strict=True)
                if flag
            ).most_common()
        ),
        "by_class": {
            str(c): {
                "parcels": int((cols.contraband == c).sum()),
                "intercepted": int(((cols.contraband == c) & cols.inspected).sum()),
                "held_at_exception": int(
                    ((cols.contraband == c) & (cols.state == ParcelState.EXCEPTION.value)).sum()
                ),
                "missed": int(
                    ((cols.contraband == c) & (cols.state == ParcelState.RELEASED.value)).sum()
                ),
            }
            for c in sorted(set(cols.contraband[bad].tolist()))
        },
    }
    clearance = cols.clearance_s[cols.cleared]
    wait_induction = cols.inducted_s - cols.arrival_s
    samples = plant.samples
    sample_t = np.array([s.t for s in samples])
    induction_q = plant.induction_queue(sample_t) if samples else {}
    horizon_h = max(bundle.scenario.horizon_h, 1e-9)
    lanes = {
        f"{lane.line}/{lane.id}": {
            "kind": lane.kind.value,
            "diverted": lane.diverted,
            "capacity_per_h": round(3600 / lane.gap_s),
            "utilisation": lane.diverted / (3600 / lane.gap_s * horizon_h),
            "busiest_hour_utilisation": max(lane.by_hour.values(), default=0) / (3600 / lane.gap_s),
        }
        for line_lanes in plant.lanes.values()
        for lane in line_lanes.values()
    }
    return {
        "scenario": bundle.scenario.name,
        "source": bundle.source,
        "site": bundle.site.site.id,
        "seed": bundle.scenario.seed,
        "fidelity": run.fidelity,
        "policy_version": _policy_version(run),
        "wall_s": round(run.wall_s, 3),
        "events": run.events,
        "parcels_generated": plant.generated,
        "parcels_closed": n,
        "open_at_end": run.open_parcels,
        "target_s": target,
        "share_within_target": within_share(cols, target),
        "clearance_s": _percentiles(clearance),
        "wait_before_induction_s": _percentiles(wait_induction),
        "states": dict(Counter(cols.state.tolist())),
        "recirculated_parcels": int((cols.laps > 0).sum()),
        "divert_outcomes": dict(plant.counts),
        "by_hour": by_hour,
        "by_line": by_line,
        "by_lane": by_lane,
        "lanes": lanes,
        "utilisation": {
            "review_officers": plant.review.pool.utilisation(),
            "inspection_stations": plant.hall.pool.utilisation(),
            "reviews_submitted": plant.review.submitted,
            "reviews_completed": plant.review.completed,
            "reviews_given_up_at_cutoff": plant.review.withdrawn,
        },
        "queues_max": {
            "before_induction": {k: int(v.max()) if v.size else 0 for k, v in induction_q.items()},
            "inspection": max((s.inspection_waiting for s in samples), default=0),
            "review": max((s.review_waiting for s in samples), default=0),
        },
        "security": security,
        "controller_kpis": run.controller_kpis,
    }


def _policy_version(run: TwinRun) -> str:
    return DecisionPolicy(run.bundle.site.policy).version


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    p = np.percentile(values, [50, 90, 95, 99])
    return {
        "mean": round(float(values.mean()), 2),
        "p50": round(float(p[0]), 2),
        "p90": round(float(p[1]), 2),
        "p95": round(float(p[2]), 2),
        "p99": round(float(p[3]), 2),
        "max": round(float(values.max()), 2),
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None
