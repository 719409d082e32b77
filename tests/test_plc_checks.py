"""Sequence checks, malformed-value checks and the PLC clock mapping, without a wire."""

from __future__ import annotations

import random

from controller.alarms import Alarms
from controller.core.domain import DestinationRequest, DivertConfirmation, DivertStatus
from plc_adapters.layout import TelegramKind
from plc_adapters.plc_clock import PlcClockMapper
from plc_adapters.telegrams import (
    RawTelegram,
    SequenceGuard,
    TelegramChecker,
    Verdict,
    barcode_fault,
)

REQUEST, CONFIRMATION = TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION


def test_sequence_guard_tells_duplicates_from_faults() -> None:
    guard = SequenceGuard()
    assert [guard.check(s, f"t{s}") for s in (5, 6, 7)] == [Verdict.NEW] * 3
    assert guard.check(6, "t6") is Verdict.DUPLICATE
    assert guard.check(6, "other") is Verdict.BACKWARDS
    assert guard.last == 7  # a fault does not move the numbering
    assert guard.check(8, "t8") is Verdict.NEW
    assert guard.check(11, "t11") is Verdict.GAP
    assert guard.check(12, "t12") is Verdict.NEW


def test_barcode_fault_names_position_and_value() -> None:
    assert barcode_fault(b"CG000000001") == ""
    assert barcode_fault(b"") == ""
    assert "byte 3 is 0x09" in barcode_fault(b"CG1\t")
    assert "byte 0 is 0xFF" in barcode_fault(b"\xff")


def test_checker_reports_a_gap_as_lost_telegrams() -> None:
    now = [0.0]
    alarms = Alarms(None, lambda: now[0])
    checker = TelegramChecker("L1", alarms)
    checker.admit(RawTelegram(1, REQUEST, 1, barcode=b"A"), 0.0)
    telegram = checker.admit(RawTelegram(4, REQUEST, 2, barcode=b"B"), 0.0)
    assert isinstance(telegram, DestinationRequest)
    assert telegram.fault == ""  # delivered: the telegram itself is sound
    assert checker.lost == 2
    assert "seq 2..3 never arrived" in alarms.active["L1/telegrams-lost"].message
    checker.admit(RawTelegram(5, REQUEST, 3, barcode=b"C"), 0.0)
    assert "L1/telegrams-lost" not in alarms.active


def test_checker_turns_a_bad_confirmation_into_lost_tracking() -> None:
    checker = TelegramChecker("L1")
    telegram = checker.admit(RawTelegram(1, CONFIRMATION, 9, lane=3, status=99), 0.0)
    assert telegram == DivertConfirmation("L1", 1, 9, 3, DivertStatus.LOST_TRACKING)
    unknown = checker.admit(RawTelegram(2, 7, 10), 0.0)
    assert isinstance(unknown, DestinationRequest)
    assert "kind is 7" in unknown.fault


def test_clock_mapping_is_never_later_than_reality_and_close_to_it() -> None:
    rng = random.Random(4)
    offset = 1234.5678  # controller clock - PLC clock, unknown to the mapper
    mapper = PlcClockMapper(staleness_s=0.01)
    plc_now = 4_294_960.0  # seconds: the 32-bit millisecond tick wraps during the run
    worst = 0.0
    for _ in range(2000):
        plc_now += rng.uniform(0.001, 0.02)
        sent = plc_now + offset - rng.uniform(0.0, 0.003)  # request sent a little earlier
        stale = rng.uniform(0.0, 0.01)  # the PLC shows a tick up to 10 ms old
        mapper.sample(sent, int((plc_now - stale) * 1000) & 0xFFFFFFFF)
        scanned = plc_now - rng.uniform(0.0, 0.5)
        tick = int(scanned * 1000) & 0xFFFFFFFF
        mapped = mapper.to_controller(tick, received=plc_now + offset)
        truth = scanned + offset
        assert mapped <= truth + 1e-9
        worst = max(worst, truth - mapped)
    assert worst < 0.05


def test_clock_mapping_restarts_when_the_plc_clock_goes_back() -> None:
    mapper = PlcClockMapper(staleness_s=0.0)
    mapper.sample(100.0, 50_000)
    mapper.sample(101.0, 1_000)  # the PLC restarted: tick went back
    assert mapper.to_controller(900, received=101.0) <= 101.0 - 0.1
