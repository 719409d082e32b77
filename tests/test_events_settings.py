"""The site file's ``events`` section: every mistake is one line naming its field, from
``cargogate config check`` as from ``run``, before anything starts; no section, no publisher;
and the topic layout never lets an id split a level or read as a wildcard."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller.app.cli import app
from controller.app.services import Services
from controller.app.site import parse_config
from controller.core.link import LinkState
from controller.core.settings import ConfigError
from controller.events.settings import MqttEventsSettings
from controller.events.topics import Topics, event_payload, lane_state, row_messages

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def demo(events: object = None, tmp_path: Path | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
    if tmp_path is not None:
        raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    if events is not None:
        raw["events"] = events
    return raw


@pytest.mark.parametrize(
    ("events", "where", "problem"),
    [
        ({"port": 1883}, "events.host", "Field required"),
        ({"host": "mqtt://broker.example:1883"}, "events.host", "not a URL"),
        ({"host": "broker example"}, "events.host", "no spaces"),
        ({"host": "broker", "port": 70000}, "events.port", "less than or equal to 65535"),
        ({"host": "broker", "port": "mqtt"}, "events.port", "valid integer"),
        ({"host": "broker", "topic_prefix": "hub/+/x"}, "events.topic_prefix", "wildcards"),
        ({"host": "broker", "topic_prefix": "hub/#"}, "events.topic_prefix", "wildcards"),
        ({"host": "broker", "topic_prefix": "$SYS"}, "events.topic_prefix", "'$'"),
        ({"host": "broker", "topic_prefix": "hub//x"}, "events.topic_prefix", "none empty"),
        ({"host": "broker", "topic_prefix": "hub/"}, "events.topic_prefix", "none empty"),
        ({"host": "broker", "ca_file": "/etc/ssl/ca.pem"}, "events.ca_file", "set tls: true"),
        ({"host": "broker", "password_env": "PW"}, "events.password_env", "set username"),
        ({"host": "broker", "kpi_every_s": 0}, "events.kpi_every_s", "greater than or equal"),
        ({"host": "broker", "client_id": "two words"}, "events.client_id", "match pattern"),
        ({"host": "broker", "tls": "perhaps"}, "events.tls", "valid boolean"),
        ({"host": "broker", "hostname": "x"}, "events.hostname", "Extra inputs"),
        ({"type": "kafka", "host": "broker"}, "events.type", "'mqtt'"),
        ("broker.example", "events", "valid dictionary"),
    ],
)
def test_a_bad_events_setting_is_one_problem_at_its_path(
    events: object, where: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(demo(events))
    [(found, _, message)] = caught.value.problems
    assert found == where
    assert problem in message


def test_config_check_names_the_ca_file_without_a_certificate_and_the_unset_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``run`` would trip on when it connects is caught by ``config check``."""
    monkeypatch.delenv("CGTEST_UNSET_PASSWORD", raising=False)
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    events = {"host": "broker", "tls": True, "ca_file": "ca.pem", "username": "site"}
    for extra, expected in [
        ({}, "  events.ca_file: no PEM CA certificate in it"),
        ({"ca_file": "missing.pem", "password_env": "CGTEST_UNSET_PASSWORD"}, None),
    ]:
        site = tmp_path / "site.yaml"
        site.write_text(yaml.safe_dump(demo({**events, **extra}, tmp_path)))
        result = runner.invoke(app, ["config", "check", str(site)], terminal_width=200)
        assert result.exit_code == 2, result.output
        lines = result.output.splitlines()
        if expected is not None:
            assert len(lines) == 2
            assert lines[1].startswith(expected)
        else:
            assert lines[1:] == [
                f"  events.ca_file: no such file or folder (got '{tmp_path}/missing.pem')",
                "  events.password_env: environment variable is not set "
                "(got 'CGTEST_UNSET_PASSWORD')",
            ]


def test_a_site_without_events_has_no_publisher_and_one_with_shows_its_link(
    tmp_path: Path,
) -> None:
    assert Services(parse_config(demo(None, tmp_path))).events is None
    config = parse_config(demo({"host": "broker.example", "tls": True}, tmp_path))
    assert config.events is not None
    assert config.events.broker_port == 8883
    services = Services(config)
    assert services.events is not None
    assert services.events.target == "mqtts://broker.example:8883/cargogate"
    assert services.links()["event broker"] is LinkState.CONNECTING


def test_the_example_site_file_s_events_section_is_valid_when_uncommented() -> None:
    text = (ROOT / "config" / "site.example.yaml").read_text()
    block = [line for line in text.splitlines() if line.startswith("# events:")]
    assert block, "site.example.yaml shows a commented-out events section"
    start = text.splitlines().index(block[0])
    section = []
    for line in text.splitlines()[start:]:
        if not line.startswith("#"):
            break
        section.append(line[2:])
    settings = MqttEventsSettings.model_validate(yaml.safe_load("\n".join(section))["events"])
    assert settings.tls


def test_ids_never_split_a_topic_level_or_read_as_a_wildcard() -> None:
    topics = Topics("hub/events", "ICN-1")
    row: dict[str, Any] = {
        "site": "ICN-1",
        "seq": 7,
        "ts": 1.0,
        "wall_time": datetime(2025, 1, 1, tzinfo=UTC),
        "kind": "alarm",
        "line": "inference",
        "tracking_id": 0,
        "hawb": "",
        "state_from": "",
        "state_to": "active",
        "destination": "",
        "lane": None,
        "reasons": [],
        "policy_version": "",
        "data": {"source": "inference/session +#/1", "message": "restarting"},
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }
    messages, change = row_messages(topics, row)
    assert [(m.topic, m.retain) for m in messages] == [
        ("hub/events/ICN-1/inference/alarm", False),
        ("hub/events/ICN-1/inference/alarm/session%20%2B%23%2F1", True),
    ]
    assert change is not None
    assert change.payload == event_payload(row)
    assert topics.event("command", "") == "hub/events/ICN-1/~/command"
    assert topics.event("decision", "L1") == "hub/events/ICN-1/L1/parcel/decision"
    assert (lane_state(0), lane_state(2), lane_state(7)) == ("available", "blocked", "unknown-7")
