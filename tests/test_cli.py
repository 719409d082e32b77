"""The command line as a user meets it: clear messages, exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller import __version__
from controller.app.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_config_check_accepts_the_shipped_examples() -> None:
    result = runner.invoke(
        app,
        ["config", "check", str(ROOT / "config/demo.yaml"), str(ROOT / "config/site.example.yaml")],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") == 2
    assert "5.50 s" in result.output  # the decision window is shown


def test_config_check_lists_every_problem_with_path_and_value(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["site"]["colour"] = "blue"  # unknown key
    raw["lines"][0]["belt"]["speed_m_s"] = -2  # out of range
    raw["lines"][1]["lanes"][0]["kind"] = "relase"  # typo in an enum
    raw["policy"]["audit_rate"] = 0.001  # below min_audit_rate
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["config", "check", str(bad)], terminal_width=200)
    assert result.exit_code == 2
    out = " ".join(result.output.split())  # rich wraps to the terminal width
    assert "4 problem(s)" in out
    for where, value in [
        ("site.colour", "'blue'"),
        ("lines.0.belt.speed_m_s", "-2"),
        ("lines.1.lanes.0.kind", "'relase'"),
        ("policy", "-"),
    ]:
        assert where in out
        assert value in out
    assert "below min_audit_rate" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file"),
        ("site: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_unreadable_files_get_a_clear_message(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "site.yaml"
    if content is not None:
        path.write_text(content)
    for args in (["config", "check", str(path)], ["run", str(path)]):
        result = runner.invoke(app, args, terminal_width=200)
        assert result.exit_code == 2
        assert expected in " ".join(result.output.split())
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_run_serves_the_demo_and_prints_its_kpis(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    raw["plant"]["speed"] = 40
    raw["plant"]["scenario"] = str(ROOT / raw["plant"]["scenario"])
    raw["console"] = {"port": 0}
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(
        app, ["run", str(config), "--duration", "1", "--no-live"], terminal_width=160
    )
    assert result.exit_code == 0, result.output
    assert "cleared within 150 s" in result.output
    assert "LOW_RISK_CLEAN_XRAY" in result.output
    assert "console: http://localhost:" in result.output
    assert (tmp_path / "journal.sqlite").exists()


def test_run_refuses_a_missing_model_with_a_clear_message(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    raw["plant"]["scenario"] = str(ROOT / raw["plant"]["scenario"])
    raw["xray"] = {"type": "onnx", "model": str(tmp_path / "missing.onnx")}
    raw["console"] = {"enabled": False}
    raw["intake"] = {"quarantine": str(tmp_path / "q"), "sources": [{"type": "inprocess"}]}
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["run", str(config), "--duration", "1", "--no-live"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "cannot start" in out
    assert "missing.onnx" in out


def test_plugin_commands_are_listed_and_run_through_the_registry() -> None:
    listed = runner.invoke(app, ["--help"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    for name in ("run", "config", "simulate", "sweep", "replay", "plc-emulator", "model", "intake"):
        assert f" {name} " in listed.output
    emulator = runner.invoke(app, ["plc-emulator", "--help"], terminal_width=200)
    assert emulator.exit_code == 0, emulator.output
    assert "--protocol" in emulator.output
    unknown = runner.invoke(app, ["simulat"])
    assert unknown.exit_code == 2


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--duration", "-5", "--duration"), ("--log-level", "loud", "--log-level")],
)
def test_run_options_out_of_range_are_one_clear_line(option: str, value: str, named: str) -> None:
    result = runner.invoke(app, ["run", "config/demo.yaml", option, value])
    assert result.exit_code == 2
    assert named in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
