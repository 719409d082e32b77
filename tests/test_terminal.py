"""The terminal live view redraws in place: each frame fits the terminal's height, and log
lines print above it, never across it (in a tmux pane either would leave torn frames behind)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from controller.app import terminal
from controller.app.cli import frame
from controller.app.site import SiteConfig, parse_config
from controller.core.link import LinkState
from controller.core.views import AlarmView, ControllerView, KpiView, Share, SiteView

ROOT = Path(__file__).resolve().parents[1]


def busy_site() -> tuple[SiteConfig, SiteView]:
    """The demo-xray site an hour in: every lane used, a dozen reason codes, alarms."""
    raw = yaml.safe_load((ROOT / "config/demo-xray.yaml").read_text())
    config = parse_config(raw)
    share = Share(hits=9_400, misses=600)
    lanes = {f"{line.id}/{lane.id}": 100 + lane.id for line in config.lines for lane in line.lanes}
    kpis = KpiView(
        target_s=150.0,
        overall=share,
        rolling={"300s": share, "900s": share, "3600s": share},
        by_hour={0: share},
        by_line={line.id: share for line in config.lines},
        buckets={"<=150s": 9_400, "150-300s": 500, ">300s": 100},
        cleared_s_sum=1.0e6,
        by_lane=lanes,
        by_reason={f"REASON_{i}": 1_000 - i for i in range(14)},
        by_state={"released": 9_000, "exception": 300, "cleared_after_inspection": 700},
        pending=40,
        decisions=10_000,
        deadline_misses=3,
        recirculations=12,
        illegal_transitions=0,
    )
    snap = SiteView(
        site="DEMO-HUB",
        controller=ControllerView(3600.0, kpis, (), holds=0, open_parcels=40),
        risk_results=10_000,
        risk_results_evicted=0,
        journal_rows=40_000,
        journal_commits=30_000,
        forwarder=None,
        plant={"inducted": 10_040, "threats_inducted": 20, "threats_released": 0},
        links={"xray": LinkState.UP},
        alarms=(AlarmView("intake/quarantine", "unmatched image", 10.0),),
    )
    return config, snap


def rendered(renderable: object, width: int, height: int) -> list[str]:
    out = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    out.print(renderable)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return str(text).rstrip("\n").split("\n")


@pytest.mark.parametrize(("width", "height"), [(100, 24), (80, 16), (120, 10), (60, 3)])
def test_every_frame_fits_the_terminal_with_a_row_to_spare(width: int, height: int) -> None:
    config, snap = busy_site()
    whole = rendered(frame(config, snap), width, height)
    assert len(whole) > height  # the frame as such would not fit: what tore the view

    lines = rendered(terminal.FitHeight(frame(config, snap)), width, height)
    assert len(lines) == height - 1
    assert lines[:-1] == whole[: height - 2]  # the top (the KPIs) is what stays
    hidden = len(whole) - (height - 2)
    assert lines[-1] == f"… {hidden} more line(s): a taller terminal shows them"[:width]


def test_a_frame_that_fits_is_shown_whole() -> None:
    config, snap = busy_site()
    whole = rendered(frame(config, snap), 160, 200)
    assert rendered(terminal.FitHeight(frame(config, snap)), 160, 200) == whole
    assert "cleared within 150 s" in whole[0]
    assert any("REASON_11" in line for line in whole)


@pytest.fixture
def our_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Handler]:
    """The handler ``cargogate run`` logs through (pytest's own taken off the root a while)."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = root.level
    terminal.setup_logging("info")
    [handler] = root.handlers
    yield handler
    root.setLevel(level)


def test_log_lines_print_above_the_live_view_not_across_it(
    our_logging: logging.Handler,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    screen = io.StringIO()
    tty = Console(file=screen, width=100, height=12, force_terminal=True, color_system=None)
    monkeypatch.setattr(terminal, "console", tty)
    assert isinstance(our_logging, logging.StreamHandler)
    own_stream = our_logging.stream
    config, snap = busy_site()
    with terminal.live_view() as show:
        show(frame(config, snap))
        logging.getLogger("controller.test").warning("a PLC went quiet")
    assert "a PLC went quiet" in screen.getvalue()  # printed by the live display, above it
    assert "a PLC went quiet" not in capsys.readouterr().err  # not straight to the terminal
    assert our_logging.stream is own_stream  # and back to its own stream afterwards
