"""The twin's validation: queueing theory, reproducibility, conservation, and agreement of
the fast path with the full controller core."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from controller.core.lifecycle import TERMINAL_STATES
from simulation.offline import run_full
from simulation.plant import RECORD_FIELDS
from simulation.run import TwinRun, run_fast
from tests.twin.files import bundle, scenario_dict, site_dict

COL = {name: i for i, name in enumerate(RECORD_FIELDS)}
TERMINAL = {s.value for s in TERMINAL_STATES}

# Student t quantile, two-sided 99 %, 19 degrees of freedom (20 batches).
T_99_19 = 2.861


def erlang_c_wait(lam: float, mu: float, c: int) -> tuple[float, float]:
    """Mean wait in queue and P(wait > 0) of an M/M/c queue (rates per second)."""
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam), p_wait


def batch_means(values: np.ndarray, batches: int = 20) -> tuple[float, float]:
    """Grand mean and the 99 % half-width from ``batches`` consecutive batch means."""
    means = [float(b.mean()) for b in np.array_split(values, batches)]
    return statistics.fmean(means), T_99_19 * statistics.stdev(means) / math.sqrt(batches)


def mmc_scenario(lam_per_h: float, mean_service_s: float, stations: int, hours: float) -> Any:
    """Every parcel to inspection (audit rate 1), Poisson arrivals, exponential service,
    no capacity limits, no read faults: the inspection hall is an M/M/c queue."""
    return scenario_dict(
        horizon_h=hours,
        drain_h=10,
        sample_every_s=3600,
        arrivals={"steady": [{"from_h": 0, "to_h": hours, "parcels_per_h": lam_per_h}]},
        induction={"max_per_h": 1e9},
        scan={"no_read_rate": 0, "multi_read_rate": 0},
        sorter={"missed_divert_rate": 0, "inspection_lane_buffer_parcels": 1_000_000},
        inspection={
            "shifts": [{"from_h": 0, "to_h": hours + 10, "stations": stations}],
            "service_time": {"dist": "exponential", "mean": mean_service_s},
            "referral_rate": 0,
        },
    )


def test_inspection_waits_match_erlang_c(tmp_path: Path) -> None:
    lam_h, service_s, c, hours = 150.0, 60.0, 3, 240.0
    site = site_dict(policy={"audit_rate": 1.0})
    run = run_fast(bundle(tmp_path, mmc_scenario(lam_h, service_s, c, hours), site))
    assert run.open_parcels == 0
    rows = sorted(run.records, key=lambda r: r[COL["inducted_s"]])
    assert {r[COL["state"]] for r in rows} <= {"cleared_after_inspection", "seized", "referred"}
    waits = np.array([r[COL["inspection_wait_s"]] for r in rows])
    waits = waits[len(waits) // 20 :]  # drop the warm-up
    expected_wait, expected_p = erlang_c_wait(lam_h / 3600, 1 / service_s, c)
    mean, half = batch_means(waits)
    assert abs(mean - expected_wait) <= half, (mean, expected_wait, half)
    p_mean, p_half = batch_means((waits > 0).astype(float))
    assert abs(p_mean - expected_p) <= p_half, (p_mean, expected_p, p_half)
    # The tolerance must be tight enough to mean something: well under a fifth of the value.
    assert half < 0.2 * expected_wait


def outcomes(run: TwinRun) -> list[tuple[Any, ...]]:
    return sorted(
        (
            r[COL["pid"]],
            r[COL["state"]],
            r[COL["lane"]],
            r[COL["laps"]],
            round(r[COL["closed_s"]], 6),
            r[COL["reasons"]].split("|")[0],
        )
        for r in run.records
    )


def test_same_seed_same_results_and_another_seed_differs(tmp_path: Path) -> None:
    first = run_fast(bundle(tmp_path / "a"))
    again = run_fast(bundle(tmp_path / "b"))
    other = run_fast(bundle(tmp_path / "c", scenario_dict(seed=12)))
    assert outcomes(first) == outcomes(again)
    assert first.controller_kpis == again.controller_kpis
    assert outcomes(first) != outcomes(other)


FAULTS = [
    {"type": "no_read_burst", "line": "L1", "at_h": 0.1, "duration_min": 3},
    {"type": "lane_full", "line": "L1", "lane": 1, "at_h": 0.2, "duration_min": 4},
    {"type": "lane_full", "line": "L2", "lane": 2, "at_h": 0.15, "duration_min": 10},
    {"type": "lane_full", "line": "L2", "lane": 3, "at_h": 0.15, "duration_min": 10},
    {"type": "late_xray", "line": "L2", "at_h": 0.3, "duration_min": 5, "latency_s": 20},
]


def faulty(tmp_path: Path) -> Any:
    return bundle(
        tmp_path,
        scenario_dict(faults=FAULTS, review={"officers": 1}),
        site_dict(lines=2),
    )


def assert_conserved(run: TwinRun) -> None:
    pids = Counter(r[COL["pid"]] for r in run.records)
    assert run.open_parcels == 0
    assert len(pids) == run.plant.generated > 0
    assert set(pids.values()) == {1}, "a parcel closed twice"
    assert {r[COL["state"]] for r in run.records} <= TERMINAL


def assert_faults_bit(run: TwinRun) -> None:
    # A parcel whose only scan fell in the no-read burst goes to exception; one read on an
    # earlier lap keeps its HAWB through a no-read on its last, and is decided by it.
    burst = [r for r in run.records if r[COL["read_fault"]] == "no_read_burst"]
    first_lap = [r for r in burst if r[COL["laps"]] == 0]
    assert first_lap
    assert {r[COL["state"]] for r in first_lap} == {"exception"}
    assert {r[COL["reasons"]] for r in first_lap} == {"NO_READ"}
    assert run.plant.counts.get("divert_lane_full", 0) > 0
    by_reason = run.controller_kpis["by_reason"]
    assert by_reason.get("XRAY_LATE", 0) > 0
    assert by_reason.get("LANE_UNAVAILABLE", 0) > 0  # both inspection lanes of L2 were full


def test_conservation_under_faults_fast_path(tmp_path: Path) -> None:
    run = run_fast(faulty(tmp_path))
    assert_conserved(run)
    assert_faults_bit(run)


def test_conservation_under_faults_full_core(tmp_path: Path) -> None:
    run = run_full(faulty(tmp_path))
    assert_conserved(run)
    assert_faults_bit(run)
    # The controller's own audit trail closes every parcel exactly once, as the plant saw it.
    closing = Counter((e.line, e.tracking_id) for e in run.journal if e.state_to in TERMINAL)
    assert set(closing.values()) == {1}
    assert len(closing) == run.plant.generated
    assert run.controller_kpis["by_state"] == dict(Counter(r[COL["state"]] for r in run.records))


def test_fast_path_agrees_with_the_full_core_parcel_by_parcel(tmp_path: Path) -> None:
    scenario = scenario_dict(
        arrivals={"steady": [{"from_h": 0, "to_h": 0.5, "parcels_per_h": 9000}]},
        faults=[{"type": "lane_full", "line": "L1", "lane": 1, "at_h": 0.2, "duration_min": 2}],
    )
    fast = run_fast(bundle(tmp_path / "fast", scenario))
    full = run_full(bundle(tmp_path / "full", scenario))
    assert outcomes(fast) == outcomes(full)
    assert fast.controller_kpis["by_reason"] == full.controller_kpis["by_reason"]
    assert (
        fast.controller_kpis["share_within_target"] == full.controller_kpis["share_within_target"]
    )
