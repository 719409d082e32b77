"""The shipped systemd unit: valid, self-supervising, and hardened (systemd-analyze)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "cargogate.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def test_the_unit_notifies_is_watched_and_cannot_loop_on_a_crash() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "StartLimitBurst=5"):
        assert re.search(rf"^{line}$", text, re.MULTILINE), line


@needs_analyze
def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    # verify wants the commands to exist: stand /bin/true in for the installed cargogate
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/cargogate/.venv/bin/cargogate", "/bin/true"))
    done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cargogate.service" not in done.stderr, done.stderr


@needs_analyze
def test_the_units_exposure_is_ok_or_better() -> None:
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(UNIT)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout[-500:] + done.stderr
    assert float(found.group(1)) <= 4.0, done.stdout[-2000:]
