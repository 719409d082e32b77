"""Scenario files: every problem reported with its path and value; infeasible loads caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from controller.core.settings import ConfigError
from simulation.cli import simulate
from simulation.run import run_fast
from simulation.scenario import load_scenario
from tests.twin.files import scenario_dict, site_dict, write_files

SCENARIOS = Path(__file__).resolve().parents[1] / "config" / "scenarios"


def problems(path: Path) -> dict[str, tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    return {where: (value, message) for where, value, message in caught.value.problems}


def test_every_schema_error_is_reported_with_path_and_value(tmp_path: Path) -> None:
    raw = scenario_dict(
        horizon_h=-1,
        review={"officers": -2, "review_time": {"dist": "gamma", "mean": 3}},
        scan={"no_read_rate": 1.5},
        inspection={"shifts": [{"from_h": 5, "to_h": 2, "stations": 3}]},
        typo_key=1,
    )
    found = problems(write_files(tmp_path, raw))
    assert found["horizon_h"][0] == "-1"
    assert found["review.officers"][0] == "-2"
    assert found["scan.no_read_rate"][0] == "1.5"
    assert "review.review_time" in " ".join(found)
    assert found["typo_key"][1].lower().startswith("extra")
    assert any(w.startswith("inspection.shifts.0") and "after" in m for w, (_, m) in found.items())
    assert len(found) >= 6


def test_cross_checks_name_unknown_lines_lanes_and_classes(tmp_path: Path) -> None:
    raw = scenario_dict(
        arrivals={"steady": [{"from_h": 0, "to_h": 1, "parcels_per_h": 100, "lines": ["L7"]}]},
        faults=[{"type": "lane_full", "line": "L1", "lane": 42, "at_h": 0, "duration_min": 1}],
        detector={"classes": {"firearm": {"present": {"a": 5, "b": 1}}}},
        truth={"goods": {"phones": {"share": 1, "contains": ["lithium_battery"]}}},
    )
    found = problems(write_files(tmp_path, raw))
    assert found["arrivals.steady.0.lines.0"][0] == "'L7'"
    assert found["faults.0.lane"][0] == "42"
    assert found["detector.classes.blade"][0] == "(missing)"
    assert "XRAY_FAILED" in found["detector.classes.blade"][1]
    assert found["truth.goods.phones.contains"][0] == "'lithium_battery'"


def test_site_file_problems_come_with_the_site_prefix(tmp_path: Path) -> None:
    site = site_dict()
    site["lines"][0]["belt"]["speed_m_s"] = -2
    found = problems(write_files(tmp_path, scenario_dict(), site))
    assert any(w.startswith("site -> lines.0.belt.speed_m_s") for w in found)


def test_policy_what_if_overrides_are_validated(tmp_path: Path) -> None:
    raw = scenario_dict(policy={"audit_rate": 0.001, "release_max_score": 3})
    found = problems(write_files(tmp_path, raw))
    assert found["policy.release_max_score"][0] == "3"


def test_arrivals_above_induction_capacity_are_refused_before_running(tmp_path: Path) -> None:
    raw = scenario_dict(
        arrivals={"steady": [{"from_h": 0, "to_h": 0.5, "parcels_per_h": 15000}]},
        induction={"max_per_h": 10000},
    )
    found = problems(write_files(tmp_path, raw))
    value, message = found["arrivals"]
    assert "15,000" in value
    assert "L1" in value
    assert "10,000" in message
    assert "allow_overload" in message


def test_overload_runs_when_asked_and_the_queue_grows(tmp_path: Path) -> None:
    raw = scenario_dict(
        arrivals={"steady": [{"from_h": 0, "to_h": 0.5, "parcels_per_h": 15000}]},
        induction={"max_per_h": 10000},
        allow_overload=True,
        sample_every_s=60,
    )
    run = run_fast(load_scenario(write_files(tmp_path, raw)))
    samples = [s.t for s in run.samples if s.t <= 1800]
    queue = run.plant.induction_queue(np.array(samples))["L1"]
    # Arrivals exceed induction by 5,000/h: after 30 minutes about 2,500 parcels wait.
    assert 2000 < queue[-1] < 3000
    assert all(later >= earlier - 50 for earlier, later in zip(queue[5:], queue[10:], strict=False))


def test_cli_prints_the_problems_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(simulate)
    app.command("noop")(lambda: None)
    path = write_files(tmp_path, scenario_dict(horizon_h=0, review={"officers": "many"}))
    result = CliRunner().invoke(app, ["simulate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    bundle = load_scenario(path)
    assert bundle.scenario.name
    assert yaml.safe_load(path.read_text())["name"] == bundle.scenario.name
