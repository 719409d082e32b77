"""Smoke test of ``bench/console.py``: a few seconds with small numbers, every key there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "decision_p99_ms_idle",
    "decision_p99_ms_console",
    "api_p99_ms",
    "ws_clients",
    "ws_update_lag_p99_ms",
    "loop_lag_p99_ms",
    "parcels",
    "decisions",
    "live_updates_received",
    "clients_dropped",
    "cpus",
}


def test_console_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/console.py"),
            "--lines=2",
            "--per-line-h=20000",
            "--seconds=2",
            "--clients=3",
            "--live-every-s=0.25",
            "--poll-pause-s=0.05",
            f"--out={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert json.loads(out.read_text()) == result
    assert result.keys() >= KEYS
    assert result["decisions"] == result["parcels"] > 0
    assert result["ws_clients"] == 3
    assert result["live_updates_received"] > 0
