"""The command line as a user meets it: clear messages, exit codes, no tracebacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller import __version__
from controller.app.cli import app
from plc_adapters.certs import make_certificate

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_config_check_accepts_the_shipped_sites_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # their paths are taken from their own folder
    sites = [
        str(ROOT / "config" / name)
        for name in ("demo.yaml", "demo-xray.yaml", "plc/site-wire.yaml")
    ]
    result = runner.invoke(app, ["config", "check", *sites])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") == 3
    assert "5.50 s" in result.output  # the decision window is shown


def installed_example(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """config/site.example.yaml installed as the systemd unit expects, in ``tmp_path``:
    ``etc/`` for /etc/cargogate, ``state/`` for /var/lib/cargogate, ``run/`` for /run/cargogate
    and this checkout for /opt/cargogate (where the shipped model is)."""
    text = (ROOT / "config/site.example.yaml").read_text()
    places = {
        "/etc/cargogate": tmp_path / "etc",
        "/var/lib/cargogate": tmp_path / "state",
        "/run/cargogate": tmp_path / "run",
        "/opt/cargogate": ROOT,
    }
    for real, here in places.items():
        text = text.replace(real, str(here))
    (tmp_path / "etc").mkdir()
    site = tmp_path / "etc" / "site.yaml"
    site.write_text(text)
    return site, {real: str(here) for real, here in places.items()}


def test_the_example_site_lists_only_what_its_machine_must_provide(tmp_path: Path) -> None:
    """Off site it is valid as a file; every line is a file, folder or variable to provide."""
    site, places = installed_example(tmp_path)
    result = runner.invoke(
        app, ["config", "check", str(site)], env={"CARGOGATE_L1_PLC_PASSWORD": None}
    )
    assert result.exit_code == 2
    lines = result.output.splitlines()
    etc, state = places["/etc/cargogate"], places["/var/lib/cargogate"]
    missing = "no such file or folder"
    assert lines[1:] == [
        f"  lines.0.sorter.security.certificate: {missing} (got '{etc}/pki/controller.der')",
        f"  lines.0.sorter.security.private_key: {missing} (got '{etc}/pki/controller-key.pem')",
        "  lines.0.sorter.password_env: environment variable is not set "
        "(got 'CARGOGATE_L1_PLC_PASSWORD')",
        f"  console.tls_cert: {missing} (got '{etc}/console.crt')",
        f"  console.tls_key: {missing} (got '{etc}/console.key')",
        f"  risk_feeds.0.path: {missing} (got '{state}/feeds')",
    ]


def test_the_example_site_checks_clean_once_its_machine_provides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, places = installed_example(tmp_path)
    etc = Path(places["/etc/cargogate"])
    make_certificate(etc / "pki", "controller", "urn:cargogate:controller")
    for name in ("console.crt", "console.key"):
        (etc / name).write_text("PEM\n")
    (Path(places["/var/lib/cargogate"]) / "feeds").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # not the site's folder: systemd starts it in the state folder
    result = runner.invoke(
        app, ["config", "check", str(site)], env={"CARGOGATE_L1_PLC_PASSWORD": "s3cret"}
    )
    assert result.exit_code == 0, result.output
    assert f"ok {site}" in " ".join(result.output.split())


def test_config_check_lists_every_problem_with_path_and_value(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["site"]["colour"] = "blue"  # unknown key
    raw["lines"][0]["belt"]["speed_m_s"] = -2  # out of range
    raw["lines"][1]["lanes"][0]["kind"] = "relase"  # typo in an enum
    raw["policy"]["audit_rate"] = 0.001  # below min_audit_rate
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["config", "check", str(bad)], terminal_width=60)
    assert result.exit_code == 2
    assert result.output.splitlines() == [  # one line each, however narrow the terminal
        f"{bad}: 4 problem(s)",
        "  site.colour: Extra inputs are not permitted (got 'blue')",
        "  lines.0.belt.speed_m_s: Input should be greater than 0 (got -2)",
        "  lines.1.lanes.0.kind: Input should be 'release', 'inspection' or 'exception' "
        "(got 'relase')",
        "  policy: audit_rate 0.001 is below min_audit_rate 0.01",
    ]


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
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
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


def test_run_refuses_what_the_machine_lacks_before_starting_anything(tmp_path: Path) -> None:
    """The same lines as ``config check``, all at once; no journal, socket or console made."""
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["store"]["journal_path"] = "var/journal.sqlite"
    raw["commands"] = {"socket": "var/cargogate.sock"}
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
    raw["xray"] = {"type": "onnx", "model": "missing.onnx"}
    raw["intake"] = {"sources": [{"type": "inprocess"}]}
    raw["risk_feeds"] = [{"type": "file", "path": "feeds/today.csv"}]
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(raw))
    expected = [
        f"{config}: 2 problem(s)",
        f"  risk_feeds.0.path: no such file or folder (got '{tmp_path}/feeds/today.csv')",
        f"  xray.model: no such file or folder (got '{tmp_path}/missing.onnx')",
    ]
    checked = runner.invoke(app, ["config", "check", str(config)])
    assert (checked.exit_code, checked.output.splitlines()) == (2, expected)
    result = runner.invoke(app, ["run", str(config), "--duration", "1", "--no-live"])
    assert (result.exit_code, result.output.splitlines()) == (2, expected)
    assert not (tmp_path / "var").exists()


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


PEAK = str(ROOT / "config/scenarios/peak-day.yaml")
SHIFT = str(ROOT / "config/scenarios/demo-shift.yaml")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["replay", str(ROOT / "README.md"), SHIFT],
            "README.md is not a CargoGate audit journal (file is not a database)",
        ),
        (
            ["replay", "{tmp}/empty.sqlite", SHIFT],
            "empty.sqlite is not a CargoGate audit journal (no such table: journal)",
        ),
        (
            ["sweep", PEAK, "--officers", "2", "--scheduler", "tcp://127.0.0.1:1"],
            "--scheduler: no Dask scheduler answers at tcp://127.0.0.1:1",
        ),
        (
            ["sweep", PEAK, "--scheduler", "tcp://127.0.0.1:99999"],
            "--scheduler: 'tcp://127.0.0.1:99999' is not a scheduler address",
        ),
        (
            ["sweep", PEAK, "--officers", "2.5"],
            "--officers: expected comma-separated whole numbers, got '2.5'",
        ),
        (["sweep", PEAK, "--hours", "-1"], "--hours: expected a positive number of hours"),
        (["simulate", PEAK, "--out", str(ROOT / "README.md")], "--out: cannot write into"),
        (
            ["simulate", "{tmp}/seed.yaml"],
            "seed: Input should be greater than or equal to 0 (got -3)",
        ),
    ],
)
def test_twin_command_mistakes_are_one_clear_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """Each found before any simulating: no traceback, exit 2."""
    sqlite3.connect(tmp_path / "empty.sqlite").execute("CREATE TABLE other (x)").connection.close()
    scenario = yaml.safe_load(Path(PEAK).read_text())
    scenario.update(seed=-3, site=str(ROOT / "config/scenarios/sites/hub-3-lines.yaml"))
    (tmp_path / "seed.yaml").write_text(yaml.safe_dump(scenario))
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    problems = [line for line in result.output.splitlines() if not line.endswith("problem(s)")]
    assert len(problems) == 1, result.output
    assert says in problems[0]
