"""`cargogate simulate`: the report folder a hub engineer reads."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from simulation.cli import simulate
from tests.twin.files import scenario_dict, site_dict, write_files

PNGS = (
    "clearance_histogram.png",
    "share_by_hour.png",
    "share_by_lane.png",
    "queues.png",
    "utilisation.png",
    "security.png",
)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulate)
    app.command("noop")(lambda: None)
    return app


@pytest.mark.parametrize("fidelity", ["fast", "full"])
def test_simulate_writes_a_consistent_report_folder(tmp_path: Path, fidelity: str) -> None:
    scenario = write_files(
        tmp_path,
        scenario_dict(horizon_h=1.5, truth={"contraband_rate": 0.02}),
        site_dict(lines=2),
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli(),
        ["simulate", str(scenario), "--out", str(out), "--fidelity", fidelity, "--hours", "0.5"],
    )
    assert result.exit_code == 0, result.output
    assert "cleared within 150 s" in result.output
    kpis = json.loads((out / "kpis.json").read_text())
    with (out / "parcels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert kpis["fidelity"] == fidelity
    assert len(rows) == kpis["parcels_closed"] == kpis["parcels_generated"] > 1000
    within = sum(1 for r in rows if r["clearance_s"] and float(r["clearance_s"]) <= 150)
    assert kpis["share_within_target"] == pytest.approx(within / len(rows))
    assert sum(kpis["states"].values()) == len(rows)
    bad = [r for r in rows if r["contraband"]]
    sec = kpis["security"]
    assert sec["contraband_parcels"] == len(bad) > 0
    assert sec["missed_released"] == sum(1 for r in bad if r["state"] == "released")
    assert sum(v["parcels"] for v in kpis["by_hour"].values()) == len(rows)
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PNGS)
    assert not re.search(r"""(src|href)=['"]?(https?:|/)""", page)  # nothing fetched from outside
