"""Write small site and scenario files into a test's temporary folder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from simulation.scenario import ScenarioBundle, deep_merge, load_scenario

LINE: dict[str, Any] = {
    "belt": {
        "speed_m_s": 2.0,
        "induct_to_scan_m": 10,
        "scan_to_divert_m": 12,
        "plc_margin_s": 0.5,
        "loop_s": 60,
    },
    "lap_limit": 3,
    "reply_budget_s": 0.05,
    "lanes": [
        {"id": 1, "kind": "release", "capacity_per_h": 12000},
        {"id": 2, "kind": "inspection", "capacity_per_h": 600},
        {"id": 3, "kind": "inspection", "capacity_per_h": 600},
        {"id": 9, "kind": "exception", "capacity_per_h": 1200},
    ],
    "sorter": {"type": "inprocess"},
}


def site_dict(lines: int = 1, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "site": {"id": "TWIN-TEST"},
        "lines": [{"id": f"L{i + 1}", **copy.deepcopy(LINE)} for i in range(lines)],
        "policy": {"audit_rate": 0.02, "min_audit_rate": 0.01, **(policy or {})},
    }


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "test",
        "site": "site.yaml",
        "seed": 11,
        "horizon_h": 0.5,
        "drain_h": 2,
        "arrivals": {"steady": [{"from_h": 0, "to_h": 0.5, "parcels_per_h": 3000}]},
        "induction": {"max_per_h": 12000},
        "review": {"officers": 2},
        "inspection": {"shifts": [{"from_h": 0, "to_h": 3, "stations": 6}]},
    }
    return deep_merge(base, overrides)


def write_files(
    folder: Path,
    scenario: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    name: str = "scenario.yaml",
) -> Path:
    """Write ``site.yaml`` and the scenario file into ``folder``; return the scenario path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.yaml").write_text(yaml.safe_dump(site or site_dict()))
    path = folder / name
    path.write_text(yaml.safe_dump(scenario or scenario_dict()))
    return path


def bundle(
    folder: Path, scenario: dict[str, Any] | None = None, site: dict[str, Any] | None = None
) -> ScenarioBundle:
    return load_scenario(write_files(folder, scenario, site))
