"""Replay: a shift recorded in the controller's own SQLite journal, re-run with what-ifs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controller.store.journal import SqliteJournal
from simulation.cli import replay as replay_command
from simulation.offline import run_full
from simulation.plant import RECORD_FIELDS
from simulation.replay import read_recording, replay
from simulation.run import TwinRun
from tests.twin.files import bundle, scenario_dict, write_files

STATE = RECORD_FIELDS.index("state")
COLLECT = {"manifest": {"yellow_rate": 0.15}, "review": {"officers": 1}}


def record_shift(tmp_path: Path) -> tuple[Path, TwinRun]:
    """Run the full controller core on the twin and keep its journal in a real SQLite file."""
    twin = bundle(tmp_path / "recorded", scenario_dict(**COLLECT))
    run = run_full(twin)
    path = tmp_path / "journal.sqlite"

    async def keep() -> None:
        async with SqliteJournal(path, twin.site.site.id) as journal:
            await journal.write(list(run.journal))

    asyncio.run(keep())
    return path, run


@pytest.fixture
def shift(tmp_path: Path) -> tuple[Path, TwinRun]:
    return record_shift(tmp_path)


def test_recording_holds_every_parcel_with_its_evidence(shift: tuple[Path, TwinRun]) -> None:
    path, run = shift
    recording = read_recording(path)
    assert len(recording.parcels) == run.plant.generated
    decided = [p for p in recording.parcels if p.destination]
    assert len(decided) == len(recording.parcels)
    with_scores = [p for p in recording.parcels if p.scores]
    assert len(with_scores) > 0.9 * len(recording.parcels)
    seized = sum(1 for r in run.records if r[STATE] == "seized")
    assert sum(1 for p in recording.parcels if p.outcome == "seized") == seized


def test_replay_as_recorded_reproduces_the_decisions(
    shift: tuple[Path, TwinRun], tmp_path: Path
) -> None:
    path, run = shift
    twin = bundle(tmp_path / "replay", scenario_dict(**COLLECT))
    again = replay(twin, read_recording(path))
    assert again.open_parcels == 0
    assert len(again.records) == run.plant.generated
    recorded = Counter(r[STATE] for r in run.records)
    replayed = Counter(r[STATE] for r in again.records)
    # Same evidence, same policy, same seeds: the same parcels go to the same places,
    # except where officers' random verdicts or missed diverts fell differently.
    changed = sum(abs(recorded[s] - replayed[s]) for s in recorded | replayed)
    assert changed <= 0.02 * len(run.records), (recorded, replayed)


def test_what_if_more_officers_and_a_stricter_threshold(
    shift: tuple[Path, TwinRun], tmp_path: Path
) -> None:
    path, _ = shift
    recording = read_recording(path)

    def inspected(officers: int, release_max_score: float) -> int:
        twin = bundle(
            tmp_path / f"w{officers}-{release_max_score}",
            scenario_dict(
                **{**COLLECT, "review": {"officers": officers}},
                policy={"release_max_score": release_max_score},
            ),
        )
        states = Counter(r[STATE] for r in replay(twin, recording).records)
        return states["cleared_after_inspection"] + states["seized"] + states["referred"]

    assert inspected(6, 0.3) < inspected(0, 0.3)
    assert inspected(6, 0.01) > inspected(6, 0.3)


def test_replay_command_compares_recorded_and_what_if(
    shift: tuple[Path, TwinRun], tmp_path: Path
) -> None:
    path, run = shift
    scenario = write_files(tmp_path / "cli", scenario_dict(**COLLECT))
    app = typer.Typer()
    app.command()(replay_command)
    app.command("noop")(lambda: None)
    out = tmp_path / "what-if"
    result = CliRunner().invoke(
        app,
        ["replay", str(path), str(scenario), "--officers", "0", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert f"{run.plant.generated:,} parcels" in result.output
    assert "inspection rate" in result.output
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["parcels_closed"] == run.plant.generated
    assert kpis["utilisation"]["reviews_completed"] == 0  # nobody in the review room

    missing = CliRunner().invoke(app, ["replay", str(tmp_path / "no.sqlite"), str(scenario)])
    assert missing.exit_code == 2
    assert "no such file" in missing.output
