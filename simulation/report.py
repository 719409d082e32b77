"""The report folder of one run: kpis.json, parcels.csv, PNG plots and one HTML page.

The HTML page embeds the plots as base64 and needs nothing else, so it can be mailed or
archived as one file. Plots are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from simulation.kpis import Columns, compute_kpis
from simulation.plant import RECORD_FIELDS
from simulation.run import TwinRun

PLOTS = (
    ("clearance_histogram.png", "Clearance time"),
    ("share_by_hour.png", "Share cleared within the target, by hour"),
    ("share_by_lane.png", "Share cleared within the target, by line and lane"),
    ("queues.png", "Queues over the day"),
    ("utilisation.png", "Officer, station and lane utilisation"),
    ("security.png", "Threats intercepted and clean parcels inspected"),
)
GOOD, BAD, NEUTRAL, WARN = "#2e7d32", "#c62828", "#1565c0", "#ef6c00"


def write_report(run: TwinRun, folder: Path) -> dict[str, Any]:
    """Write the whole report folder; returns the KPIs written to kpis.json."""
    folder.mkdir(parents=True, exist_ok=True)
    kpis = compute_kpis(run)
    (folder / "kpis.json").write_text(json.dumps(_jsonable(kpis), indent=2) + "\n")
    write_parcels_csv(run, folder / "parcels.csv")
    cols = Columns.of(run.records)
    figures = {
        "clearance_histogram.png": plot_clearance(cols, kpis),
        "share_by_hour.png": plot_share_by_hour(kpis),
        "share_by_lane.png": plot_share_by_lane(kpis),
        "queues.png": plot_queues(run),
        "utilisation.png": plot_utilisation(run, kpis),
        "security.png": plot_security(kpis),
    }
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    (folder / "report.html").write_text(render_html(kpis, folder), encoding="utf-8")
    return kpis


def write_parcels_csv(run: TwinRun, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*RECORD_FIELDS, "clearance_s"])
        state_i, ind_i, closed_i = (
            RECORD_FIELDS.index("state"),
            RECORD_FIELDS.index("inducted_s"),
            RECORD_FIELDS.index("closed_s"),
        )
        for r in run.records:
            cleared = r[state_i] in ("released", "cleared_after_inspection")
            row = [_cell(v) for v in r]
            row.append(f"{r[closed_i] - r[ind_i]:.3f}" if cleared else "")
            writer.writerow(row)


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else value


# --- plots ----------------------------------------------------------------------------------


def plot_clearance(cols: Columns, kpis: dict[str, Any]) -> Figure:
    target = kpis["target_s"]
    values = cols.clearance_s[cols.cleared]
    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    if values.size:
        top = max(float(values.max()), target * 2)
        bins = np.geomspace(max(float(values.min()), 1.0) * 0.9, top * 1.1, 60).tolist()
        ax.hist(values[values <= target], bins=bins, color=GOOD, label=f"cleared ≤ {target:g} s")
        ax.hist(values[values > target], bins=bins, color=BAD, label=f"cleared > {target:g} s")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.axvline(target, color="black", linestyle="--", linewidth=1.5)
    share = kpis["share_within_target"]
    ax.text(
        target * 1.05,
        0.95,
        f"{target:g} s target\n{_pct(share)} of all parcels within",
        transform=ax.get_xaxis_transform(),
        va="top",
    )
    ax.set_xlabel("seconds from induction to clearance (log scale)")
    ax.set_ylabel("parcels (log scale)")
    ax.set_title(
        f"Clearance time of cleared parcels — {kpis['scenario']} "
        f"({kpis['parcels_closed']:,} parcels, {kpis['states'].get('exception', 0):,} to exception)"
    )
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def plot_share_by_hour(kpis: dict[str, Any]) -> Figure:
    hours = sorted(kpis["by_hour"], key=int)
    share = [_nz(kpis["by_hour"][h]["share_within_target"]) * 100 for h in hours]
    volume = [kpis["by_hour"][h]["parcels"] for h in hours]
    fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    x = [int(h) for h in hours]
    colors = [GOOD if s >= 95 else WARN if s >= 85 else BAD for s in share]
    ax.bar(x, share, color=colors, width=0.8, label="share within target (%)")
    ax.set_ylim(0, 105)
    ax.set_xlabel("hour of induction (from the start of the run)")
    ax.set_ylabel(f"% cleared within {kpis['target_s']:g} s")
    ax.grid(axis="y", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, volume, color="black", marker="o", linewidth=1.2, label="parcels inducted")
    ax2.set_ylabel("parcels inducted in the hour")
    ax2.set_ylim(0, max([*volume, 1]) * 1.15)
    ax.set_title("Share cleared within target by hour (green ≥ 95 %, orange ≥ 85 %, red below)")
    ax.set_xticks(x)
    lines = [*ax.get_legend_handles_labels()[0], *ax2.get_legend_handles_labels()[0]]
    labels = [*ax.get_legend_handles_labels()[1], *ax2.get_legend_handles_labels()[1]]
    ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return fig


def plot_share_by_lane(kpis: dict[str, Any]) -> Figure:
    lanes = kpis["lanes"]
    names = sorted(kpis["by_lane"])
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.8), layout="constrained")
    share = [_nz(kpis["by_lane"][n]["share_within_target"]) * 100 for n in names]
    kinds = [lanes.get(n, {}).get("kind", "?") for n in names]
    colors = [
        {"release": GOOD, "inspection": WARN, "exception": BAD}.get(k, NEUTRAL) for k in kinds
    ]
    bars = ax.barh(names, share, color=colors)
    for bar, name, kind in zip(bars, names, kinds, strict=True):
        parcels = kpis["by_lane"][name]["parcels"]
        ax.text(
            bar.get_width() + 1,
            bar.get_y() + bar.get_height() / 2,
            f"{bar.get_width():.1f} %  ({kind}, {parcels:,} parcels)",
            va="center",
        )
    ax.set_xlim(0, 145)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel(f"% cleared within {kpis['target_s']:g} s of induction")
    ax.invert_yaxis()
    lines = ", ".join(f"{k} {_pct(v)}" for k, v in kpis["by_line"].items())
    ax.set_title(f"By line/lane where the parcel ended (per line: {lines})")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_queues(run: TwinRun) -> Figure:
    samples = run.samples
    t = np.array([s.t for s in samples]) / 3600
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, layout="constrained")
    induction = run.plant.induction_queue(t * 3600) if samples else {}
    for line, q in induction.items():
        axes[0].plot(t, q, label=f"line {line}")
    axes[0].set_ylabel("parcels waiting")
    axes[0].set_title("Before induction (arrived, not yet on the line)")
    axes[1].plot(t, [s.inspection_waiting for s in samples], color=WARN, label="waiting")
    axes[1].step(
        t, [s.stations for s in samples], color="black", where="post", label="stations staffed"
    )
    axes[1].set_ylabel("parcels / stations")
    buffer = sum(
        lane.buffer
        for lanes in run.plant.lanes.values()
        for lane in lanes.values()
        if lane.kind.value == "inspection"
    )
    axes[1].axhline(buffer, color=BAD, linestyle=":", label="all inspection lanes full")
    axes[1].set_title(
        "Inspection lanes: parcels waiting for a station "
        "(at the red line, parcels for inspection go to exception)"
    )
    axes[2].plot(t, [s.review_waiting for s in samples], color=NEUTRAL, label="waiting for review")
    axes[2].plot(t, [s.on_belt for s in samples], color="grey", label="parcels on the plant")
    axes[2].set_ylabel("parcels")
    axes[2].set_title("Review room queue and parcels on the plant")
    axes[2].set_xlabel("hours from the start of the run")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left")
    return fig


def plot_utilisation(run: TwinRun, kpis: dict[str, Any]) -> Figure:
    samples = run.samples
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(12, 4.8), layout="constrained", gridspec_kw={"width_ratios": [3, 2]}
    )
    if samples:
        t = np.array([s.t for s in samples])
        hour = np.floor(t / 3600).astype(int)
        hours = np.unique(hour)

        def hourly(busy: list[int], staffed: list[int]) -> list[float]:
            b, s = np.array(busy, float), np.array(staffed, float)
            return [
                100 * b[hour == h].sum() / s[hour == h].sum() if s[hour == h].sum() else 0.0
                for h in hours
            ]

        ax.plot(
            hours,
            hourly([s.officers_busy for s in samples], [s.officers for s in samples]),
            marker="o",
            color=NEUTRAL,
            label="review officers",
        )
        ax.plot(
            hours,
            hourly([s.stations_busy for s in samples], [s.stations for s in samples]),
            marker="s",
            color=WARN,
            label="inspection stations",
        )
    ax.set_ylim(0, 105)
    ax.set_xlabel("hour")
    ax.set_ylabel("% of staffed time busy")
    ax.set_title("People: busy share of staffed time, by hour")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    lanes = kpis["lanes"]
    names = sorted(lanes)
    y = np.arange(len(names))
    day = [100 * lanes[n]["utilisation"] for n in names]
    peak = [100 * lanes[n]["busiest_hour_utilisation"] for n in names]
    colors = [
        {"release": GOOD, "inspection": WARN, "exception": BAD}.get(lanes[n]["kind"], NEUTRAL)
        for n in names
    ]
    ax2.barh(y - 0.2, peak, height=0.4, color=colors, label="busiest hour")
    ax2.barh(y + 0.2, day, height=0.4, color=colors, alpha=0.4, label="whole run")
    ax2.set_yticks(y, [f"{n} ({lanes[n]['kind']})" for n in names])
    ax2.invert_yaxis()
    ax2.axvline(100, color="black", linestyle="--", linewidth=1)
    ax2.set_xlabel("parcels diverted, % of the lane's capacity_per_h")
    ax2.set_title("Lanes: load vs rated capacity (dark: busiest hour)")
    ax2.grid(axis="x", alpha=0.3)
    ax2.legend(loc="lower right", fontsize="small")
    return fig


def plot_security(kpis: dict[str, Any]) -> Figure:
    sec = kpis["security"]
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(12, 4.8), layout="constrained", gridspec_kw={"width_ratios": [3, 2]}
    )
    classes = sorted(sec["by_class"])
    x = np.arange(len(classes))
    inter = [sec["by_class"][c]["intercepted"] for c in classes]
    held = [sec["by_class"][c]["held_at_exception"] for c in classes]
    missed = [sec["by_class"][c]["missed"] for c in classes]
    ax.bar(x, inter, color=GOOD, label="intercepted at inspection")
    ax.bar(x, held, bottom=inter, color=WARN, label="held at exception lane")
    ax.bar(x, missed, bottom=np.add(inter, held), color=BAD, label="missed (released)")
    ax.set_xticks(x, classes, rotation=15)
    ax.set_ylim(0, max([*np.add(np.add(inter, held), missed).tolist(), 1]) * 1.25)
    ax.set_ylabel("contraband parcels")
    ax.set_title(
        f"Hidden contraband: {sec['intercepted_at_inspection']} intercepted, "
        f"{sec['held_at_exception']} held, {sec['missed_released']} missed"
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    clean = sec["clean_parcels_inspected"]
    rate = sec["clean_inspection_rate"]
    why = sec["clean_inspected_by_first_reason"]
    reasons = list(why)[:8]
    ax2.barh(reasons, [why[r] for r in reasons], color=NEUTRAL)
    ax2.invert_yaxis()
    ax2.set_title(f"Clean parcels opened: {clean:,}\n({_pct(rate)} of all clean parcels)")
    ax2.set_xlabel("clean parcels inspected, by the decision's first reason")
    ax2.grid(axis="x", alpha=0.3)
    return fig


# --- HTML -----------------------------------------------------------------------------------


def render_html(kpis: dict[str, Any], folder: Path) -> str:
    sec = kpis["security"]
    util = kpis["utilisation"]
    rows = [
        ("scenario", f"{kpis['scenario']} (seed {kpis['seed']}, {kpis['fidelity']} fidelity)"),
        ("site / policy", f"{kpis['site']} / {kpis['policy_version']}"),
        ("parcels", f"{kpis['parcels_closed']:,} closed, {kpis['open_at_end']:,} still open"),
        (f"cleared within {kpis['target_s']:g} s", _pct(kpis["share_within_target"])),
        (
            "clearance time p50 / p95 / p99",
            " / ".join(_secs(kpis["clearance_s"][k]) for k in ("p50", "p95", "p99")),
        ),
        (
            "wait before induction p95 / max",
            " / ".join(_secs(kpis["wait_before_induction_s"][k]) for k in ("p95", "max")),
        ),
        ("states", ", ".join(f"{k} {v:,}" for k, v in sorted(kpis["states"].items()))),
        (
            "officer / station utilisation",
            f"{_pct(util['review_officers'])} / {_pct(util['inspection_stations'])}",
        ),
        (
            "reviews given up at the cutoff",
            f"{util['reviews_given_up_at_cutoff']:,} of {util['reviews_submitted']:,}",
        ),
        (
            "contraband",
            f"{sec['contraband_parcels']} hidden: {sec['intercepted_at_inspection']} intercepted, "
            f"{sec['held_at_exception']} held at exception, {sec['missed_released']} released",
        ),
        (
            "clean parcels inspected",
            f"{sec['clean_parcels_inspected']:,} ({_pct(sec['clean_inspection_rate'])})",
        ),
        ("max queues", _queues(kpis["queues_max"])),
    ]
    table = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    images = []
    for name, title in PLOTS:
        data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        images.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>CargoGate twin report: {html.escape(kpis["scenario"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th {{ text-align: left; padding: 0.25em 1em 0.25em 0; color: #555; font-weight: normal; }}
td {{ padding: 0.25em 0; font-weight: 600; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin-bottom: 1em; }}
</style></head><body>
<h1>Twin report: {html.escape(kpis["scenario"])}</h1>
<table>{table}</table>
{"".join(images)}
<p>Figures: kpis.json; per parcel: parcels.csv (one row per parcel, times in seconds from the
start of the run).</p>
</body></html>
"""


def _queues(q: dict[str, Any]) -> str:
    before = ", ".join(f"{line} {n:,}" for line, n in q["before_induction"].items())
    return (
        f"before induction: {before}; inspection lanes: {q['inspection']:,}; "
        f"review room: {q['review']:,}"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} s"


def _nz(value: float | None) -> float:
    return 0.0 if value is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
