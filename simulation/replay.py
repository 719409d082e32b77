"""Replay a recorded shift from the controller's own audit journal, with what-if changes.

Each parcel's first scan gives its line, HAWB (the barcode read) and arrival time; its first
decision gives the evidence the controller had: the manifest risk result and the X-ray scores
(or that the barcode was not read); an inspection result of "seized" marks it as contraband.
The twin then runs those parcels, in their recorded order and timing, through the plant of a
scenario file (staffing, lanes, policy), so "one more officer" or "another threshold" is
answered against real traffic.

What a recording cannot tell is replaced explicitly: a parcel with no recorded X-ray scores
is unscored (the policy inspects it), and contraband that nobody found looks clean.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.core.domain import RiskChannel, RiskResult
from controller.core.settings import ConfigError
from controller.store.read import read_entries
from simulation.run import TwinRun, run_fast
from simulation.scenario import ScenarioBundle
from simulation.truth import LineArrivals, ParcelSpec

SEIZED = "recorded_seizure"
"""Contraband class given to parcels the recording shows seized (invisible to the model)."""


@dataclass
class RecordedParcel:
    line: str
    tracking_id: int
    hawb: str
    arrived_at: float
    risk: RiskResult | None = None
    scores: dict[str, float] = field(default_factory=dict)
    destination: str = ""
    reasons: list[int] = field(default_factory=list)
    outcome: str = ""
    decided: bool = False


@dataclass
class Recording:
    site: str
    parcels: list[RecordedParcel]
    rows: int

    def destinations(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parcels:
            out[p.destination or "undecided"] = out.get(p.destination or "undecided", 0) + 1
        return out


def read_recording(journal: Path, site: str | None = None) -> Recording:
    """Parcels of a recorded shift, in arrival order, from a journal database file."""
    rows = read_entries(journal, site=site)
    sites = {row["site"] for row in rows}
    if len(sites) > 1:
        raise ConfigError(
            str(journal),
            [("site", ", ".join(sorted(sites)), "the journal holds several sites; pick one")],
        )
    open_by_id: dict[tuple[str, int], RecordedParcel] = {}
    parcels: list[RecordedParcel] = []
    for row in rows:
        key = (row["line"], row["tracking_id"])
        kind = row["kind"]
        data: dict[str, Any] = row["data"] or {}
        if kind == "transition" and row["state_to"] == "scanned" and not row["state_from"]:
            parcel = RecordedParcel(
                row["line"],
                row["tracking_id"],
                row["hawb"],
                float(data.get("arrived_at", row["ts"])),
            )
            open_by_id[key] = parcel
            parcels.append(parcel)
            continue
        parcel_or_none = open_by_id.get(key)
        if parcel_or_none is None:
            continue
        parcel = parcel_or_none
        if kind == "decision" and not parcel.decided:
            parcel.decided = True
            parcel.destination = row["destination"]
            parcel.reasons = list(row["reasons"] or [])
            parcel.risk = _risk(parcel.hawb, data.get("risk"))
            xray = data.get("xray") or {}
            if xray.get("status") == "ok":
                parcel.scores = {str(k): float(v) for k, v in (xray.get("scores") or {}).items()}
        elif row["state_from"] == "in_inspection" and row["state_to"]:
            # an officer's inspection outcome (a command; "inspection_result" in older files)
            parcel.outcome = str(data.get("outcome", ""))
    parcels.sort(key=lambda p: p.arrived_at)
    return Recording(sites.pop() if sites else (site or ""), parcels, len(rows))


def _risk(hawb: str, data: Any) -> RiskResult | None:
    if not isinstance(data, dict):
        return None
    try:
        channel = RiskChannel(data["channel"])
        return RiskResult(hawb, channel, float(data["score"]), str(data.get("declared", "")))
    except (KeyError, ValueError, TypeError):
        return None


def replay(bundle: ScenarioBundle, recording: Recording) -> TwinRun:
    """Run the recorded parcels through the scenario's plant (fast path, real policy)."""
    lines = {line.id for line in bundle.site.lines}
    unknown = sorted({p.line for p in recording.parcels} - lines)
    if unknown:
        raise ConfigError(
            bundle.source,
            [
                (
                    "site",
                    ", ".join(unknown),
                    f"recorded lines missing from the site ({', '.join(sorted(lines))})",
                )
            ],
        )
    if not recording.parcels:
        raise ConfigError(bundle.source, [("journal", "0 parcels", "the recording has no parcels")])
    t0 = min(p.arrived_at for p in recording.parcels)
    last = max(p.arrived_at for p in recording.parcels) - t0
    horizon_h = max(last / 3600 + 1e-6, 1e-3)
    scan = bundle.scenario.scan.model_copy(update={"no_read_rate": 0.0, "multi_read_rate": 0.0})
    scenario = bundle.scenario.model_copy(
        update={"horizon_h": horizon_h, "allow_overload": True, "scan": scan}
    )
    bundle = bundle.model_copy(update={"scenario": scenario})
    arrivals = []
    specs: dict[str, Iterator[ParcelSpec]] = {}
    pid = 1
    for line in bundle.site.lines:
        mine = [p for p in recording.parcels if p.line == line.id]
        times = np.array([p.arrived_at - t0 for p in mine], dtype=float)
        arrivals.append(LineArrivals(line.id, times, np.zeros(times.size, dtype=np.int32)))
        specs[line.id] = iter(
            [
                ParcelSpec(
                    pid + i,
                    line.id,
                    float(times[i]),
                    p.hawb or f"NOREAD-{line.id}-{p.tracking_id}",
                    "replay",
                    p.risk.declared_goods if p.risk else "",
                    SEIZED if p.outcome == "seized" else None,
                    p.risk,
                    p.scores,
                    "" if p.hawb else "no_read",
                )
                for i, p in enumerate(mine)
            ]
        )
        pid += len(mine)
    return run_fast(bundle, arrivals=arrivals, specs=specs)


def recorded_summary(recording: Recording) -> dict[str, Any]:
    n = len(recording.parcels)
    inspected = sum(1 for p in recording.parcels if p.destination == "inspection")
    return {
        "parcels": n,
        "destinations": recording.destinations(),
        "inspection_rate": inspected / n if n else math.nan,
        "seized": sum(1 for p in recording.parcels if p.outcome == "seized"),
    }
