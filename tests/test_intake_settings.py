"""The intake and inference settings: the example file validates, mistakes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from controller.core.ports import ScanImage
from controller.inference.cli import model_app
from controller.inference.settings import OnnxXray
from controller.intake.cli import intake_app
from controller.intake.dicom_scp import DicomStorageScp
from controller.intake.factory import build_intake
from controller.intake.folder import FolderSource
from controller.intake.quarantine import Quarantine
from controller.intake.settings import Intake
from tests.imaging.models import build_model

EXAMPLE = Path(__file__).parents[1] / "config" / "site.example.yaml"


def test_the_example_file_validates_and_builds_every_source(tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    xray = OnnxXray.model_validate(raw["xray"])
    assert xray.providers[-1] == "CPUExecutionProvider"
    intake = Intake.model_validate(raw["intake"])
    parts = build_intake(intake)
    kinds = {name: type(source) for name, source in parts.sources.items()}
    assert kinds == {
        "line1-scanner-files": FolderSource,
        "line1-dicos-files": FolderSource,
        "scanner-network": DicomStorageScp,
    }
    assert parts.reports is not None


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"type": "onnx", "model": "m.onnx", "max_batch": 0}, "max_batch"),
        ({"type": "onnx", "model": "m.onnx", "threads": 2}, "threads"),
        ({"type": "onnx"}, "model"),
    ],
)
def test_bad_xray_settings_name_the_field(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        OnnxXray.model_validate(raw)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ({"type": "watch_folder"}, "path"),
        ({"type": "dicom_scp", "ae_title": "A" * 17}, "ae_title"),
        ({"type": "dicom_scp", "port": 70000}, "port"),
        ({"type": "ftp", "path": "x"}, "type"),
        ({"type": "watch_folder", "path": "x", "poll": 1}, "poll"),
    ],
)
def test_bad_intake_sources_name_the_field(source: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        Intake.model_validate({"sources": [source]})


def test_source_names_must_be_unique() -> None:
    source = {"type": "watch_folder", "path": "x"}
    with pytest.raises(ValidationError, match="repeated: \\['watch_folder'\\]"):
        Intake.model_validate({"sources": [source, source]})


def test_cli_lists_quarantine_and_checks_a_model(tmp_path: Path) -> None:
    Quarantine(tmp_path / "q").put(ScanImage("LOST1", None, "scp", 1.0, None, "no key"), "why")
    runner = CliRunner()
    listed = runner.invoke(intake_app, [str(tmp_path / "q")])
    assert listed.exit_code == 0, listed.output
    assert "LOST1" in listed.output
    model = build_model(tmp_path / "m.onnx", classes=["firearm"])
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: {id: T}\nlines: [{id: L1, lanes: [{id: 1, kind: inspection}, "
        "{id: 9, kind: exception}], sorter: {type: inprocess}}]\n"
    )
    checked = runner.invoke(model_app, [str(model), "--site", str(site)])
    assert checked.exit_code == 2
    assert "'blade'" in checked.output
