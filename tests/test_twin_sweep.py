"""The sweep: a small grid on a real local Dask cluster."""

from __future__ import annotations

import json
from pathlib import Path

from simulation.sweep import grid, run_sweep, write_sweep
from tests.twin.files import scenario_dict, write_files


def test_two_by_two_grid_runs_on_a_local_dask_cluster(tmp_path: Path) -> None:
    path = write_files(
        tmp_path,
        scenario_dict(
            horizon_h=0.25,
            arrivals={"steady": [{"from_h": 0, "to_h": 0.25, "parcels_per_h": 4000}]},
            manifest={"yellow_rate": 0.2},
        ),
    )
    points = grid(officers=[0, 4], release_max_score=[0.05, 0.3])
    rows = run_sweep(path, points, workers=2, processes=False)
    assert [(r["officers"], r["release_max_score"]) for r in rows] == [
        (0, 0.05),
        (0, 0.3),
        (4, 0.05),
        (4, 0.3),
    ]
    assert all(r["error"] == "" and r["parcels"] > 500 for r in rows)
    by = {(r["officers"], r["release_max_score"]): r for r in rows}
    # Officers on screen clear YELLOW parcels that would otherwise be opened ...
    assert by[(4, 0.3)]["inspection_rate"] < by[(0, 0.3)]["inspection_rate"]
    assert by[(4, 0.3)]["share_within_target"] > by[(0, 0.3)]["share_within_target"]
    # ... and a stricter release threshold inspects more.
    assert by[(4, 0.05)]["inspection_rate"] > by[(4, 0.3)]["inspection_rate"]
    # Fixed seeds: every variant saw the same parcels.
    assert len({r["parcels"] for r in rows}) == 1
    write_sweep(rows, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "sweep.json").read_text()) == rows
    for name in ("sweep.csv", "share_vs_officers.png", "intercepted_vs_inspection_rate.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
