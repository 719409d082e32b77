"""Staffing and policy studies: a grid of scenario variants run in parallel on Dask.

Each grid point is the base scenario with overrides (review officers, induction rate, a policy
threshold, inspection stations) and the base seed, so points differ only by what the grid
varies. Points run on a ``distributed.LocalCluster`` by default, or on an existing Dask
scheduler when its address is given; every worker needs this project installed.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from controller.core.settings import ConfigError
from simulation.kpis import compute_kpis
from simulation.run import run_fast
from simulation.scenario import load_scenario

SUMMARY_FIELDS = (
    "officers",
    "induction_per_h",
    "release_max_score",
    "stations",
    "share_within_target",
    "parcels",
    "inspection_rate",
    "contraband",
    "intercepted",
    "held_at_exception",
    "missed",
    "clean_inspected",
    "officer_utilisation",
    "station_utilisation",
    "max_queue_before_induction",
    "error",
)


@dataclass(frozen=True)
class GridPoint:
    """One variant; None keeps the base scenario's value."""

    officers: int | None = None
    induction_per_h: float | None = None
    release_max_score: float | None = None
    stations: int | None = None

    def overrides(self, horizon_h: float, drain_h: float) -> dict[str, Any]:
        out: dict[str, Any] = {"allow_overload": True}
        if self.officers is not None:
            out["review"] = {"officers": self.officers}
        if self.induction_per_h is not None:
            out["induction"] = {"max_per_h": self.induction_per_h, "per_line": {}}
        if self.release_max_score is not None:
            out["policy"] = {"release_max_score": self.release_max_score}
        if self.stations is not None:
            shift = {"from_h": 0, "to_h": horizon_h + drain_h + 1, "stations": self.stations}
            out["inspection"] = {"shifts": [shift]}
        return out


def grid(
    officers: Sequence[int] = (),
    induction_per_h: Sequence[float] = (),
    release_max_score: Sequence[float] = (),
    stations: Sequence[int] = (),
) -> list[GridPoint]:
    """The cross product of the given values; an empty list keeps the base value."""
    axes: list[Sequence[Any]] = [
        list(officers) or [None],
        list(induction_per_h) or [None],
        list(release_max_score) or [None],
        list(stations) or [None],
    ]
    return [GridPoint(*values) for values in itertools.product(*axes)]


def run_point(scenario: str, point: GridPoint, hours: float | None = None) -> dict[str, Any]:
    """Run one grid point on the fast path and summarise it (runs on a Dask worker)."""
    base: dict[str, Any] = {} if hours is None else {"horizon_h": hours}
    row: dict[str, Any] = {
        "officers": point.officers,
        "induction_per_h": point.induction_per_h,
        "release_max_score": point.release_max_score,
        "stations": point.stations,
    }
    try:
        probe = load_scenario(Path(scenario), allow_overload=True, **base)
        s = probe.scenario
        bundle = load_scenario(Path(scenario), **base, **point.overrides(s.horizon_h, s.drain_h))
    except ConfigError as exc:
        return {**row, "error": str(exc)}
    s = bundle.scenario
    row.update(
        officers=s.review.officers,
        induction_per_h=s.induction.max_per_h,
        release_max_score=bundle.site.policy.release_max_score,
        stations=max(sh.stations for sh in s.inspection.shifts),
    )
    k = compute_kpis(run_fast(bundle))
    sec = k["security"]
    inspected = sum(
        k["states"].get(name, 0) for name in ("cleared_after_inspection", "seized", "referred")
    )
    parcels = k["parcels_closed"]
    return {
        **row,
        "share_within_target": k["share_within_target"],
        "parcels": parcels,
        "inspection_rate": inspected / parcels if parcels else None,
        "contraband": sec["contraband_parcels"],
        "intercepted": sec["intercepted_at_inspection"],
        "held_at_exception": sec["held_at_exception"],
        "missed": sec["missed_released"],
        "clean_inspected": sec["clean_parcels_inspected"],
        "officer_utilisation": k["utilisation"]["review_officers"],
        "station_utilisation": k["utilisation"]["inspection_stations"],
        "max_queue_before_induction": max(k["queues_max"]["before_induction"].values(), default=0),
        "error": "",
    }


def run_sweep(
    scenario: Path,
    points: list[GridPoint],
    address: str | None = None,
    workers: int = 2,
    processes: bool = True,
    hours: float | None = None,
) -> list[dict[str, Any]]:
    """Run every point on Dask and return one summary row per point, in grid order."""
    # Lazy vendor import: distributed adds about half a second to start-up and only
    # `cargogate sweep` needs it, while simulation.cli imports this module for every twin command.
    from distributed import Client, LocalCluster

    if address:
        client = Client(address)  # type: ignore[no-untyped-call]
        cluster = None
    else:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0",  # a free port: never clash with another cluster
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    try:
        futures = client.map(
            run_point, [str(scenario.resolve())] * len(points), points, [hours] * len(points)
        )
        return list(client.gather(futures))  # type: ignore[no-untyped-call]
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()


def write_sweep(rows: list[dict[str, Any]], folder: Path) -> None:
    """sweep.json, sweep.csv and the trade-off plots."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (folder / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in SUMMARY_FIELDS})
    ok = [r for r in rows if not r.get("error")]
    fig = plot_share_vs_officers(ok)
    fig.savefig(folder / "share_vs_officers.png", dpi=110)
    plt.close(fig)
    fig = plot_security_tradeoff(ok)
    fig.savefig(folder / "intercepted_vs_inspection_rate.png", dpi=110)
    plt.close(fig)


def _label(row: dict[str, Any]) -> str:
    return (
        f"induction {row['induction_per_h']:,.0f}/h, stations {row['stations']}, "
        f"release ≤ {row['release_max_score']:g}"
    )


def plot_share_vs_officers(rows: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_label(row), []).append(row)
    for label, members in sorted(groups.items()):
        members.sort(key=lambda r: r["officers"])
        ax.plot(
            [r["officers"] for r in members],
            [100 * (r["share_within_target"] or 0) for r in members],
            marker="o",
            label=label,
        )
    ax.set_xlabel("review officers on screen")
    ax.set_ylabel("% of parcels cleared within the target")
    ax.set_title("Share cleared within target vs review officers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_security_tradeoff(rows: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for row in rows:
        rate = 100 * (row["inspection_rate"] or 0)
        share = row["intercepted"] / row["contraband"] if row["contraband"] else 0.0
        ax.scatter(rate, 100 * share, s=60)
        ax.annotate(
            f"{row['officers']} off., {row['stations']} st., ≤{row['release_max_score']:g}",
            (rate, 100 * share),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize="small",
        )
    ax.set_xlabel("% of parcels physically inspected")
    ax.set_ylabel("% of hidden contraband intercepted at inspection")
    ax.set_title("Threats intercepted vs inspection rate (one point per grid variant)")
    ax.grid(alpha=0.3)
    return fig
