"""The layering the import contracts state, checked at run time: the pure core loads no vendor
library, and the registry and site schema load none of the adapters' libraries."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import controller.core

ROOT = Path(__file__).resolve().parents[1]
VENDORS = ("asyncua", "pymodbus", "onnxruntime", "sqlalchemy", "fastapi", "simpy", "numpy", "yaml")
ADAPTER_LIBRARIES = (
    "asyncua",
    "pymodbus",
    "onnxruntime",
    "simpy",
    "numpy",
    "pydicom",
    "pynetdicom",
)


def _loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of ``watched`` ended up in sys.modules."""
    report = f"print(json.dumps([m for m in {list(watched)!r} if m in sys.modules]))"
    probe = f"{code}\nimport json, sys\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(loaded, list)
    return loaded


def test_every_core_module_imports_only_the_standard_library_and_pydantic() -> None:
    modules = sorted(
        f"controller.core.{info.name}" for info in pkgutil.iter_modules(controller.core.__path__)
    )
    assert "controller.core.policy" in modules
    assert "controller.core.link" in modules
    imports = "\n".join(f"import {module}" for module in modules)
    assert _loaded_after(imports, VENDORS) == []


@pytest.mark.parametrize(
    "code",
    [
        "from controller.app.registry import default_registry; default_registry()",
        "from controller.app.site import load_config; from pathlib import Path; "
        "load_config(Path('config/site.example.yaml')); load_config(Path('config/demo.yaml'))",
        "import plc_adapters.registration, controller.inference.registration, "
        "controller.intake.registration, controller.risk.registration, simulation.registration",
    ],
)
def test_registrations_and_the_site_schema_load_no_adapter_library(code: str) -> None:
    """Validating a site file (OPC UA, ONNX, DICOM, the twin all named) loads none of them."""
    assert _loaded_after(code, ADAPTER_LIBRARIES) == []


def test_the_cargogate_command_loads_the_twin_only_when_a_twin_command_runs() -> None:
    code = (
        "from typer.testing import CliRunner; from controller.app.cli import app; "
        "result = CliRunner().invoke(app, ['config', 'check', 'config/plc/site-wire.yaml']); "
        "assert result.exit_code == 0, result.output"
    )
    assert _loaded_after(code, ("simpy", "simulation.cli", "plc_adapters.emulator")) == []
