"""The soak's check: every parcel the floor ended, against the controller's journal.

The floor wrote where each parcel went (``fates``: parcel, line, tracking id, lane, divert
status, laps) and each officer's answer (``answers``: parcel, outcome, accepted). A parcel
ends in the journal with one row whose ``state_to`` is terminal (a divert confirmation, an
accepted inspection command, a lost-tracking close), or stays in ``open_parcels`` with its
state. Refused commands and illegal transitions change nothing and are left out. Everything
is counted in SQL (a million parcels, a few million journal rows), the journal read-only.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

from soak_floor import INSPECTION_LANE, LANE_STATE, OUTCOME_STATE

TERMINAL = ("released", "cleared_after_inspection", "seized", "referred", "exception")

_VIEWS = """
CREATE TEMP VIEW lost AS
  SELECT w.line, w.tid FROM want w
  WHERE NOT EXISTS (SELECT 1 FROM ended e WHERE e.line = w.line AND e.tid = w.tid)
    AND NOT EXISTS (SELECT 1 FROM j.open_parcels p WHERE p.line = w.line AND p.tracking_id = w.tid);
CREATE TEMP VIEW doubled AS
  SELECT e.line, e.tid FROM ended e
  WHERE e.ends > 1 OR NOT EXISTS (SELECT 1 FROM sent s WHERE s.line = e.line AND s.tid = e.tid);
CREATE TEMP VIEW mismatched AS
  SELECT w.line, w.tid FROM want w JOIN ended e ON e.line = w.line AND e.tid = w.tid
  WHERE e.state IS NOT w.state;
"""
"""``lost``: sent, never ended and not open; ``doubled``: ended twice, or never sent;
``mismatched``: ended somewhere other than where the floor put it."""


def verify(journal: Path, fates: Path, answers: Path) -> dict[str, Any]:
    """Counts of lost, doubled and mismatched parcels (with a few examples of each and their
    journal rows), end states, parcels left open, and the journal's own counts."""
    db = sqlite3.connect("file::memory:", uri=True)  # so the journal attaches read-only
    try:
        _load(db, journal, fates, answers)
        return _report(db)
    finally:
        db.close()


def _load(db: sqlite3.Connection, journal: Path, fates: Path, answers: Path) -> None:
    db.execute("ATTACH DATABASE ? AS j", (f"file:{journal}?mode=ro",))
    db.execute(
        "CREATE TABLE sent (n INTEGER PRIMARY KEY, line TEXT, tid INTEGER, lane INTEGER,"
        " status INTEGER, laps INTEGER)"
    )
    db.execute("CREATE TABLE officer (n INTEGER PRIMARY KEY, outcome TEXT, accepted INTEGER)")
    with fates.open(newline="") as f:
        db.executemany("INSERT INTO sent VALUES (?, ?, ?, ?, ?, ?)", csv.reader(f))
    with answers.open(newline="") as f:
        db.executemany("INSERT INTO officer VALUES (?, ?, ?)", csv.reader(f))
    db.execute("CREATE INDEX ix_sent ON sent (line, tid)")
    terminal = ", ".join(f"'{state}'" for state in TERMINAL)
    db.execute(
        f"""CREATE TABLE ended AS
            SELECT line, tracking_id AS tid, count(*) AS ends, max(state_to) AS state
            FROM j.journal
            WHERE state_to IN ({terminal})
              AND kind NOT IN ('illegal_transition', 'alarm')
              AND NOT (kind = 'command' AND json_extract(data, '$.accepted') = 0)
            GROUP BY line, tracking_id"""
    )
    db.execute("CREATE INDEX ix_ended ON ended (line, tid)")
    by_lane = " ".join(f"WHEN {lane} THEN '{state}'" for lane, state in LANE_STATE.items())
    by_outcome = " ".join(f"WHEN '{o}' THEN '{state}'" for o, state in OUTCOME_STATE.items())
    db.execute(
        f"""CREATE TABLE want AS
            SELECT s.n, s.line, s.tid,
                   CASE WHEN s.lane = {INSPECTION_LANE} AND s.status = 0
                        THEN CASE o.outcome {by_outcome} END
                        ELSE CASE s.lane {by_lane} END END AS state
            FROM sent s LEFT JOIN officer o ON o.n = s.n"""
    )
    db.executescript(_VIEWS)


def _report(db: sqlite3.Connection) -> dict[str, Any]:
    def one(sql: str) -> int:
        return int(db.execute(sql).fetchone()[0] or 0)

    def examples(view: str) -> dict[str, list[str]]:
        """A few parcels of ``view`` with their journal rows (kind:from>to), to start from."""
        found = {}
        for line, tid in db.execute(f"SELECT line, tid FROM {view} LIMIT 3").fetchall():
            rows = db.execute(
                "SELECT kind, state_from, state_to FROM j.journal"
                " WHERE line = ? AND tracking_id = ? ORDER BY seq",
                (line, tid),
            )
            found[f"{line}/{tid}"] = [f"{kind}:{a}>{b}" for kind, a, b in rows]
        return found

    views = ("lost", "doubled", "mismatched")
    return {
        **{view: one(f"SELECT count(*) FROM {view}") for view in views},
        "sent": one("SELECT count(*) FROM sent"),
        "closed": one("SELECT count(*) FROM ended"),
        "end_states": dict(
            db.execute("SELECT state, count(*) FROM ended GROUP BY state ORDER BY 2 DESC")
        ),
        "open_at_end": dict(db.execute("SELECT state, count(*) FROM j.open_parcels GROUP BY 1")),
        "examples": {view: found for view in views if (found := examples(view))},
        "journal_rows": one("SELECT count(*) FROM j.journal"),
        "deadline_misses": one("SELECT count(*) FROM j.journal WHERE kind = 'deadline_miss'"),
        "illegal_transitions": one(
            "SELECT count(*) FROM j.journal WHERE kind = 'illegal_transition'"
        ),
        "alarms": one("SELECT count(*) FROM j.journal WHERE kind = 'alarm'"),
    }
