"""`cargogate sweep` as a user meets it: a local cluster on pinned ports, and every mistake
about the cluster in one line with exit code 2, before anything simulates."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.app.cli import app
from simulation.sweep import LOCAL_HOST
from tests.test_sweep_cluster import free_block, listening
from tests.twin.files import scenario_dict, write_files

CARGOGATE = Path(sys.executable).with_name("cargogate")
runner = CliRunner()


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    return write_files(
        tmp_path,
        scenario_dict(
            horizon_h=0.1, arrivals={"steady": [{"from_h": 0, "to_h": 0.1, "parcels_per_h": 3000}]}
        ),
    )


def test_the_command_runs_a_grid_on_a_local_cluster_with_pinned_ports(
    scenario: Path, tmp_path: Path
) -> None:
    """The installed command, as a user runs it (its worker processes re-import it)."""
    port, first = free_block(1), free_block(4)
    out = tmp_path / "out"
    command = [str(CARGOGATE), "sweep", str(scenario), "--officers", "0,3", "--stations", "2,6"]
    command += ["--scheduler-port", str(port), "--worker-ports", f"{first}:{first + 3}"]
    command += ["--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"scheduler: tcp://{LOCAL_HOST}:{port}\n" in done.stdout
    assert "4 variant(s) of test in 4 chunk(s) on 2 Dask worker thread(s)" in done.stdout
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["officers"], r["stations"]) for r in rows] == [(0, 2), (0, 6), (3, 2), (3, 6)]
    assert all(r["error"] == "" for r in rows)
    assert "Traceback" not in done.stderr


def one_line_mistake(args: list[str], says: str) -> None:
    out = Path(args[1]).parent / "out"  # never the default folder under the working directory
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert says in result.output, result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--worker-ports", "40100:40000"], "--worker-ports: expected ports 1-65535 with FIRST"),
        (["--worker-ports", "many"], "--worker-ports: expected a port or a range FIRST:LAST"),
        (["--scheduler-port", "70000"], "--scheduler-port: expected a port 1-65535, got 70000"),
        (["--dashboard-port", "0"], "--dashboard-port: expected a port 1-65535, got 0"),
        (["--chunk-size", "0"], "--chunk-size: expected at least 1, got 0"),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--worker-ports", "40000:40010"],
            "--worker-ports: only for a local cluster, not with --scheduler",
        ),
    ],
)
def test_cluster_options_mistakes_are_one_clear_line(
    scenario: Path, args: list[str], says: str
) -> None:
    one_line_mistake(["sweep", str(scenario), *args], says)


def test_a_scheduler_port_in_use_is_one_clear_line(scenario: Path) -> None:
    port = free_block(1)
    with listening(port):
        one_line_mistake(
            ["sweep", str(scenario), "--scheduler-port", str(port)],
            f"--scheduler-port: port {port} on {LOCAL_HOST} is not free (Address already in use)",
        )


def test_worker_ports_too_few_is_one_clear_line(scenario: Path) -> None:
    first = free_block(3)
    one_line_mistake(
        ["sweep", str(scenario), "--workers", "2", "--worker-ports", f"{first}:{first + 2}"],
        f"--worker-ports: {first}:{first + 2} has 3 free port(s) on {LOCAL_HOST}; 2 worker(s) "
        "need 4",
    )


@pytest.mark.skipif(
    importlib.util.find_spec("bokeh") is not None, reason="bokeh installed: the dashboard runs"
)
def test_a_dashboard_without_bokeh_is_one_clear_line(scenario: Path) -> None:
    one_line_mistake(
        ["sweep", str(scenario), "--dashboard-port", str(free_block(1))],
        "--dashboard-port: the Dask dashboard needs bokeh",
    )
