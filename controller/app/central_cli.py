"""``cargogate central status|parcels URL``: the whole hub, read from the central database.

Every site's forwarder ships its journal to one central database; these commands read it
(read-only) and show what it holds per site: how far each site has shipped and when its
newest row was written (a forwarder that lags or is cut off shows as an old row), seqs
missing from a copy, open parcels and active alarms as the rows leave them, and one
parcel's history across the hub. ``--json`` prints the same as one JSON document.

Exit codes: 0 read; 1 ``status`` found a site with missing seqs, or ``parcels --hawb`` found
no row of that HAWB; 2 the database cannot be read (one line says why: a bad URL, no such
file, an unreachable or refusing server, no journal there).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from controller.app.terminal import console, errors
from controller.store.chain import JournalSourceError
from controller.store.openset import OpenParcel
from controller.store.read import (
    HubView,
    JournalledAlarm,
    SiteSummary,
    read_history,
    read_hub,
    read_open_parcels,
)

central_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")

_T = TypeVar("_T")

Url = Annotated[
    str,
    typer.Argument(
        metavar="URL",
        help="The central database, e.g. postgresql://viewer@db.example/central (or a "
        "journal file: a site's own journal reads the same way).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]
HorizonH = Annotated[
    float,
    typer.Option(
        "--horizon-h",
        min=0,
        help="Count parcels opened within this many hours, as a restarting controller's "
        "recovery does (0: fold the whole journal, slow on weeks of rows).",
    ),
]


@central_app.callback()
def central() -> None:
    """The whole hub from the central database every site's forwarder ships to."""


@central_app.command("status")
def status_command(
    url: Url,
    as_json: AsJson = False,
    parcels: Annotated[
        bool, typer.Option(help="Count each site's open parcels (a pass over its rows).")
    ] = True,
    horizon_h: HorizonH = 24.0,
    stale_after_s: Annotated[
        float,
        typer.Option(
            "--stale-after-s",
            min=0,
            help="Mark a site whose newest row is older than this (a quiet line or a "
            "lagging forwarder: look at that site's link state).",
        ),
    ] = 300.0,
) -> None:
    """Per site: rows shipped, newest seq and its wall time, missing seqs, open parcels and
    active alarms; then the active alarms. Exit 1 when a site's copy misses seqs."""
    hub = _read(lambda: read_hub(url, count_parcels=parcels, parcels_since=_since(horizon_h)))
    if as_json:
        _print_json(_hub_json(hub, horizon_h if parcels else None))
    else:
        _print_hub(hub, stale_after_s)
    if any(site.missing for site in hub.sites):
        raise typer.Exit(code=1)


@central_app.command("parcels")
def parcels_command(
    url: Url,
    site: Annotated[
        str | None, typer.Option("--site", help="This site only (default: every site).")
    ] = None,
    hawb: Annotated[
        str | None,
        typer.Option("--hawb", help="Show this HAWB's journal rows instead of open parcels."),
    ] = None,
    as_json: AsJson = False,
    horizon_h: HorizonH = 24.0,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many parcels.")] = 100,
) -> None:
    """Open parcels, oldest first; with ``--hawb``, every row of that HAWB (its history
    across the hub). Exit 1 when ``--hawb`` finds no row."""
    if hawb is not None:
        wanted = hawb
        rows = _read(lambda: read_history(url, wanted, site))
        if as_json:
            _print_json({"hawb": wanted, "site": site, "rows": [_jsonable(r) for r in rows]})
        else:
            _print_history(wanted, rows)
        if not rows:
            raise typer.Exit(code=1)
        return
    by_site = _read(lambda: read_open_parcels(url, site, _since(horizon_h)))
    found = [(name, p) for name, parcels in sorted(by_site.items()) for p in parcels]
    found.sort(key=lambda item: (item[1].arrived_wall, item[0], item[1].opened_seq))
    now = datetime.now(UTC)
    if as_json:
        _print_json(
            {
                "read_at": now.isoformat(),
                "horizon_h": horizon_h or None,
                "total": len(found),
                "parcels": [_parcel_json(name, p, now) for name, p in found[:limit]],
            }
        )
        return
    _print_parcels(found, limit, now)


# --- reading ----------------------------------------------------------------------------------


def _read(work: Callable[[], _T]) -> _T:
    """Run a read; a source that cannot be read is one red line and exit 2, never a trace."""
    try:
        return work()
    except JournalSourceError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None


def _since(horizon_h: float) -> datetime | None:
    return datetime.now(UTC) - timedelta(hours=horizon_h) if horizon_h > 0 else None


# --- printing ---------------------------------------------------------------------------------


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _age_s(summary: SiteSummary, now: datetime) -> float | None:
    if summary.newest_wall_time is None:
        return None
    return max(0.0, (now - summary.newest_wall_time).total_seconds())


def _hub_json(hub: HubView, horizon_h: float | None) -> dict[str, Any]:
    alarms_by_site: dict[str, int] = {}
    for alarm in hub.alarms:
        alarms_by_site[alarm.site] = alarms_by_site.get(alarm.site, 0) + 1
    return {
        "read_at": hub.read_at.isoformat(),
        "parcels_horizon_h": horizon_h or None,
        "sites": [
            {
                "site": s.site,
                "rows": s.rows,
                "last_seq": s.last_seq,
                "missing": s.missing,
                "newest_wall_time": _iso(s.newest_wall_time),
                "age_s": _age_s(s, hub.read_at),
                "open_parcels": None if hub.open_parcels is None else hub.open_parcels[s.site],
                "active_alarms": alarms_by_site.get(s.site, 0),
            }
            for s in hub.sites
        ],
        "alarms": [_alarm_json(a) for a in hub.alarms],
    }


def _alarm_json(alarm: JournalledAlarm) -> dict[str, Any]:
    return {
        "site": alarm.site,
        "source": alarm.source,
        "line": alarm.line,
        "message": alarm.message,
        "since": alarm.since.isoformat(),
        "seq": alarm.seq,
    }


def _parcel_json(site: str, parcel: OpenParcel, now: datetime) -> dict[str, Any]:
    return {
        "site": site,
        "line": parcel.line,
        "tracking_id": parcel.tracking_id,
        "hawb": parcel.hawb,
        "state": parcel.state.value,
        "laps": parcel.laps,
        "arrived": parcel.arrived_wall.isoformat(),
        "waiting_s": round((now - parcel.arrived_wall).total_seconds(), 3),
        "opened_seq": parcel.opened_seq,
        "updated_seq": parcel.updated_seq,
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _print_hub(hub: HubView, stale_after_s: float) -> None:
    if not hub.sites:
        console.print("no journal rows: no site has shipped yet", highlight=False)
        return
    alarms_by_site: dict[str, int] = {}
    for alarm in hub.alarms:
        alarms_by_site[alarm.site] = alarms_by_site.get(alarm.site, 0) + 1
    table = Table(
        title=f"{len(hub.sites)} site(s), read {_when(hub.read_at)}", title_justify="left"
    )
    table.add_column("site")
    for name in ("rows", "last seq", "missing"):
        table.add_column(name, justify="right")
    table.add_column("newest row (UTC)")
    for name in ("age", "open parcels", "alarms"):
        table.add_column(name, justify="right")
    for s in hub.sites:
        age = _age_s(s, hub.read_at)
        stale = age is not None and age > stale_after_s
        alarms = alarms_by_site.get(s.site, 0)
        table.add_row(
            escape(s.site),
            f"{s.rows:,}",
            f"{s.last_seq:,}",
            f"[red]{s.missing:,}[/red]" if s.missing else "0",
            _when(s.newest_wall_time),
            f"[yellow]{_duration(age)}[/yellow]" if stale else _duration(age),
            "-" if hub.open_parcels is None else f"{hub.open_parcels[s.site]:,}",
            f"[red]{alarms}[/red]" if alarms else "0",
        )
    console.print(table)
    if hub.alarms:
        listed = Table(title="active alarms (as journalled)", title_justify="left")
        for name in ("site", "source", "since (UTC)", "message"):
            listed.add_column(name)
        for a in hub.alarms:
            listed.add_row(escape(a.site), escape(a.source), _when(a.since), escape(a.message))
        console.print(listed)
    for s in hub.sites:
        if s.missing:
            errors.print(
                f"[red]{escape(s.site)}: {s.missing:,} seq(s) below {s.last_seq:,} missing "
                "from this copy[/red] (cargogate audit verify URL --site SITE says which)",
                soft_wrap=True,
                highlight=False,
            )


def _print_history(hawb: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print(f"no journal rows for HAWB {escape(hawb)}", highlight=False)
        return
    table = Table(title=f"HAWB {escape(hawb)}: {len(rows)} row(s)", title_justify="left")
    for name in ("site", "seq"):
        table.add_column(name)
    table.add_column("written (UTC)")
    for name in ("kind", "line", "id", "state", "lane", "reasons"):
        table.add_column(name)
    for r in rows:
        move = f"{r['state_from'] or '-'} -> {r['state_to']}" if r["state_to"] else ""
        table.add_row(
            escape(r["site"]),
            str(r["seq"]),
            _when(r["wall_time"]),
            r["kind"],
            escape(r["line"]),
            str(r["tracking_id"]),
            escape(move),
            "" if r["lane"] is None else str(r["lane"]),
            ",".join(str(code) for code in r["reasons"] or ()),
        )
    console.print(table)


def _print_parcels(found: list[tuple[str, OpenParcel]], limit: int, now: datetime) -> None:
    if not found:
        console.print("no open parcels", highlight=False)
        return
    table = Table(title=f"{len(found):,} open parcel(s), oldest first", title_justify="left")
    for name in ("site", "line", "id", "hawb", "state", "laps"):
        table.add_column(name)
    table.add_column("arrived (UTC)")
    table.add_column("waiting", justify="right")
    for site, p in found[:limit]:
        table.add_row(
            escape(site),
            escape(p.line),
            str(p.tracking_id),
            escape(p.hawb) or "[dim]no read[/dim]",
            p.state.value,
            str(p.laps),
            _when(p.arrived_wall),
            _duration((now - p.arrived_wall).total_seconds()),
        )
    console.print(table)
    if len(found) > limit:
        console.print(f"... and {len(found) - limit:,} more (--limit)", highlight=False)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _when(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
