"""``bench/soak.py`` at small scale, and its check against the journal.

The smoke run carries 300 parcels through a real ``cargogate run`` over OPC UA and Modbus TCP
(at 30× so the officers' minutes pass in seconds) and needs every key the issue names, none
lost or doubled. The check is then shown to see what it counts: a parcel the journal never
closed, one it closed twice, one it never heard of, and one that ended elsewhere than where
the floor put it, written through the real journal writer.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from controller.core.domain import EntryKind, JournalEntry
from controller.store.journal import SqliteJournal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from soak_check import verify  # noqa: E402  (bench/ is not a package)

KEYS = {
    "parcels",
    "lost",
    "doubled",
    "rss_mb_start",
    "rss_mb_end",
    "rss_slope_mb_per_h",
    "wall_s",
    "parcels_per_s",
    "sim_hours",
    "speed",
    "protocol",
    "lines",
    "rss_samples",
}


def test_soak_bench_carries_parcels_over_both_protocols_and_loses_none(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/soak.py"),
            "--parcels=300",
            "--speed=30",
            "--sample-s=0.5",
            f"--out={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert json.loads((out / "soak.json").read_text()) == result
    assert result.keys() >= KEYS
    assert result["lost"] == result["doubled"] == result["mismatched"] == 0
    assert result["parcels"] == result["sent"] == result["closed"] == 300
    assert sum(result["end_states"].values()) == 300
    assert result["open_at_end"] == {}
    assert not result["drain_timed_out"]
    assert result["lines_by_protocol"] == {"modbus": 2, "opcua": 2}
    inspected = sum(result["end_states"].get(s, 0) for s in ("cleared_after_inspection", "seized"))
    inspected += result["end_states"].get("referred", 0)
    assert result["officer_accepted"] == inspected  # the officers closed what they opened
    assert result["rss_mb_start"] > 0
    assert result["rss_mb_end"] > 0
    assert result["rss_samples"]
    assert result["sim_hours"] > 0
    assert (out / "rss.png").stat().st_size > 0
    assert (out / "rss.csv").read_text().startswith("wall_s,sim_h,rss_mb")


def _parcel(
    ts: float, line: str, tid: int, hawb: str, *moves: tuple[str, str, str]
) -> list[JournalEntry]:
    return [
        JournalEntry(ts + i, EntryKind(kind), line, tid, hawb, start, end)
        for i, (kind, start, end) in enumerate(moves)
    ]


SCAN = ("transition", "", "scanned")
DECIDE = ("decision", "scanned", "decided")
RELEASED = ("confirmation", "decided", "released")
EXCEPTION = ("confirmation", "decided", "exception")
AT_INSPECTION = ("confirmation", "decided", "in_inspection")
SEIZED = ("inspection_result", "in_inspection", "seized")


async def test_check_counts_lost_doubled_and_misplaced_parcels(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.sqlite", "SOAK")
    await journal.start()
    entries = [
        *_parcel(1, "L1", 1, "SK000000000", SCAN, DECIDE, RELEASED),  # as the floor says
        *_parcel(20, "L1", 3, "SK000000002", SCAN, DECIDE, EXCEPTION),
        *_parcel(30, "L1", 4, "SK000000003", SCAN, DECIDE, RELEASED),  # closed twice below
        *_parcel(40, "L1", 5, "SK000000004", SCAN, DECIDE, AT_INSPECTION),
        *_parcel(50, "L1", 6, "SK000000005", SCAN, DECIDE, AT_INSPECTION),
        *_parcel(60, "L1", 6, "SK000000005", SEIZED),
        *_parcel(70, "L1", 4, "SK000000003", SCAN, DECIDE, RELEASED),
        *_parcel(80, "L2", 99, "SK000000099", SCAN, DECIDE, RELEASED),  # no PLC sent it
    ]
    await journal.write(entries)
    await journal.close()
    fates, answers = tmp_path / "fates.csv", tmp_path / "answers.csv"
    with fates.open("w", newline="") as f:
        csv.writer(f).writerows(
            [
                (0, "L1", 1, 1, 0, 0),
                (1, "L1", 2, 1, 0, 0),  # the journal never heard of it: lost
                (2, "L1", 3, 1, 0, 0),  # released on the floor, exception in the journal
                (3, "L1", 4, 1, 0, 0),
                (4, "L1", 5, 2, 0, 0),  # at inspection; the officer has not answered: open
                (5, "L1", 6, 2, 0, 0),
            ]
        )
    with answers.open("w", newline="") as f:
        csv.writer(f).writerow((5, "seized", 1))

    checked = verify(tmp_path / "journal.sqlite", fates, answers)

    assert (checked["lost"], checked["doubled"], checked["mismatched"]) == (1, 2, 1)
    assert set(checked["examples"]["lost"]) == {"L1/2"}
    assert set(checked["examples"]["doubled"]) == {"L1/4", "L2/99"}
    assert set(checked["examples"]["mismatched"]) == {"L1/3"}
    assert checked["open_at_end"] == {"in_inspection": 1}  # open with its reason, not lost
    assert checked["end_states"] == {"released": 3, "exception": 1, "seized": 1}
