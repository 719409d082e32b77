"""The drill's site file: a site's lines behind emulated PLCs on loopback, on a short belt.

A drill never touches the floor's PLCs nor the production journal. It takes from the site file
given with ``--site`` (or the built-in two-line site: L1 over OPC UA, L2 over Modbus TCP) the
site id, the policy, and per line the lanes, lap limit, reply budget, the sorter's protocol and
its link settings; every line's sorter block then points at an emulated PLC on 127.0.0.1 (no
security: it is loopback), the journal at the drill's scratch folder, and the belt is
shortened (:data:`BELT`) so that a parcel reaches its divert 1.5 s after its scan and a drill
plays a burst in seconds. Console and command socket are off; the risk feed, X-ray and intake
are the drill's own (see :mod:`simulation.drills.rig`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.app.site import SiteConfig
from controller.core.settings import Line

NAMESPACE = "urn:cargogate:drill"
PROTOCOLS = ("opcua", "modbus")

BELT: Mapping[str, float] = {
    "speed_m_s": 2.0,
    "induct_to_scan_m": 2.0,
    "scan_to_divert_m": 3.0,
    "plc_margin_s": 0.3,
    "loop_s": 3.0,
}
"""The drill's belt: a 1.2 s decision window, the divert 1.5 s after the scan, a 3 s loop."""

LINK: Mapping[str, float] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}
"""Reconnect pacing of the drill's links: a restarted PLC is found again within half a second."""

_DEFAULT_LANES = [
    {"id": 1, "kind": "release", "capacity_per_h": 12000},
    {"id": 2, "kind": "inspection", "capacity_per_h": 6000},
    {"id": 9, "kind": "exception", "capacity_per_h": 6000},
]
_DEFAULT_LINK = {"ring_size": 64, "lane_slots": 8, "heartbeat_period_s": 0.25}
_DROPPED_SORTER_KEYS = (
    "type", "endpoint", "host", "port", "security", "username", "password_env", "password_file",
)  # fmt: skip


@dataclass(frozen=True)
class DrillLine:
    """One line of the drill: its core settings, protocol and sorter block (less the endpoint)."""

    line: Line
    protocol: str
    sorter: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.line.id


def drill_lines(base: SiteConfig | None) -> list[DrillLine]:
    """The drill's lines: those of ``base`` (a line played in-process gets OPC UA and Modbus
    by turns), or L1 over OPC UA and L2 over Modbus TCP."""
    if base is None:
        raws: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
            ({"id": "L1", "lanes": _DEFAULT_LANES}, "opcua", {"link": dict(_DEFAULT_LINK)}),
            ({"id": "L2", "lanes": _DEFAULT_LANES}, "modbus", {"link": dict(_DEFAULT_LINK)}),
        ]
    else:
        raws = []
        for i, site_line in enumerate(base.lines):
            core = site_line.model_dump(mode="json", exclude={"sorter", "belt"}, exclude_unset=True)
            sorter = site_line.sorter.model_dump(mode="json", exclude_unset=True)
            protocol = str(sorter.get("type"))
            if protocol not in PROTOCOLS:
                protocol, sorter = PROTOCOLS[i % 2], {"link": dict(_DEFAULT_LINK)}
            raws.append((core, protocol, sorter))
    lines = []
    for core, protocol, sorter in raws:
        block = {k: v for k, v in sorter.items() if k not in _DROPPED_SORTER_KEYS}
        block["link"] = {**block.get("link", {}), **LINK}
        line = Line.model_validate({**core, "belt": dict(BELT)})
        lines.append(DrillLine(line, protocol, block))
    return lines


def site_document(
    site_id: str,
    lines: Sequence[DrillLine],
    endpoints: Mapping[str, Mapping[str, Any]],
    journal: Path,
    policy: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The drill's site file as a document: ``endpoints`` gives each line's sorter block its
    ``type`` and where its emulated PLC listens; ``extra`` adds or replaces top-level sections
    (``risk_feeds``, ``xray``, ``intake``, ``store`` keys ...)."""
    document: dict[str, Any] = {
        "site": {"id": site_id, "name": f"fault drill of {site_id}"},
        "lines": [
            {
                **drill.line.model_dump(mode="json", exclude_unset=True),
                "sorter": {**drill.sorter, **endpoints[drill.id]},
            }
            for drill in lines
        ],
        "policy": dict(policy),
        "store": {"journal_path": str(journal)},
        "commands": {"enabled": False},
        "console": {"enabled": False},
    }
    for key, value in extra.items():
        if key == "store":
            document["store"] = {**document["store"], **value}
        else:
            document[key] = value
    return document


def write_site(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(
        "# written by `cargogate drill`: the drill's own site, on loopback\n"
        + yaml.safe_dump(dict(document), sort_keys=False),
        encoding="utf-8",
    )
    return path
