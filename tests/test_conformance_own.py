"""CargoGate's own adapters pass their ports' suites through the conformance kit's pytest
plugin, each rule exactly as the adapter's checklist says (done: passed, exempt: skipped,
todo: expected to fail). Each port's kit runs in a pytest of its own, as an integrator runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.conformance.rules import PORTS
from controller.core.domain import DestinationRequest
from plc_adapters.layout import TelegramKind
from plc_adapters.telegrams import RawTelegram, TelegramChecker
from tests.conformance.own.catalog import kits
from tests.conformance.runs import expected_outcomes, run_kit

OWN = Path(__file__).parent / "conformance" / "own"
ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("port", PORTS)
def test_own_adapters_meet_their_checklists(port: str, tmp_path: Path) -> None:
    run = run_kit([port], [OWN], tmp_path, cwd=ROOT)
    failed = [o for o in run.outcomes if o.outcome in ("failed", "error")]
    assert not failed, "\n\n".join(f"{o.kit} {o.rule}: {o.message}" for o in failed)
    assert run.returncode == 0, run.tail()
    assert run.by_rule() == expected_outcomes(kits(port), port), run.tail()


def test_fault_texts_name_the_field_the_value_and_what_was_expected() -> None:
    """The kit asks only that a malformed value's fault names the value; this project's texts
    also name the field and what was expected (docs/plc-interface.md, malformed telegrams)."""
    checker = TelegramChecker("L1")
    request, confirmation = TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION
    raws = [
        RawTelegram(1, request, 100, barcode=b"GOOD1"),
        RawTelegram(2, request, 101, barcode=b"CG\xc3\xa9001"),
        RawTelegram(3, confirmation, 102, lane=0, status=0),
        RawTelegram(4, confirmation, 103, lane=1, status=77),
        RawTelegram(1, request, 104, barcode=b"OTHER"),
    ]
    telegrams = [checker.admit(raw, 0.0) for raw in raws]
    non_ascii, backwards = telegrams[1], telegrams[4]
    assert isinstance(non_ascii, DestinationRequest)
    assert "byte 2 is 0xC3" in non_ascii.fault
    assert "printable ASCII" in non_ascii.fault
    assert isinstance(backwards, DestinationRequest)
    assert "went backwards: 1 after 4" in backwards.fault
    assert checker.faults == 4
