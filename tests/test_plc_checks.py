"""Sequence checks, malformed-value checks and the PLC clock mapping, without a wire."""

from __future__ import annotations

import random

from controller.alarms import Alarms
from controller.core.domain import DestinationRequest, DivertConfirmation, DivertStatus
from plc_adapters.layout import BARCODE_BYTES, TelegramKind, fit_barcode
from plc_adapters.plc_clock import PlcClockMapper
from plc_adapters.telegrams import (
    RESYNC_AFTER,
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


def test_an_unknown_kind_is_reported_and_not_delivered_as_a_request() -> None:
    """Neither a request nor a confirmation: no parcel can be told from it (a zeroed slot
    reads kind 0), so it is alarmed and skipped; its number still counts (no false gap)."""
    alarms = Alarms(None, lambda: 0.0)
    checker = TelegramChecker("L1", alarms)
    assert checker.admit(RawTelegram(1, REQUEST, 1, barcode=b"A"), 0.0) is not None
    for seq, kind in ((2, 7), (3, 0)):
        assert checker.admit(RawTelegram(seq, kind, 10 + seq), 0.0) is None
    assert (checker.faults, checker.skipped, checker.lost) == (2, 2, 0)
    assert "kind is 7" in alarms.history[0][2]
    after = checker.admit(RawTelegram(4, REQUEST, 4, barcode=b"B"), 0.0)
    assert isinstance(after, DestinationRequest)
    assert after.fault == ""
    assert [active for _, _, _, active in alarms.history] == [True, False]
    assert not alarms.active


def test_sequence_numbers_wrap_modulo_2_32() -> None:
    guard = SequenceGuard()
    numbers = [(0xFFFF_FFFD + k) & 0xFFFF_FFFF for k in range(6)]  # ..., 2**32 - 1, 0, 1, 2
    assert [guard.check(s, f"t{s}") for s in numbers] == [Verdict.NEW] * 6
    assert guard.check(0xFFFF_FFFF, "t4294967295") is Verdict.DUPLICATE
    assert guard.check(0xFFFF_FFFE, "other") is Verdict.BACKWARDS
    assert guard.check(5, "t5") is Verdict.GAP  # 3 and 4 lost, across nothing odd
    guard = SequenceGuard()
    guard.check(0xFFFF_FFF0, "a")
    assert guard.check(2, "b") is Verdict.GAP  # 17 ahead through the wrap, not 4 billion back


def test_one_wild_number_ahead_does_not_make_every_later_telegram_backwards() -> None:
    guard = SequenceGuard()
    for s in range(1, 11):
        guard.check(s, f"t{s}")
    assert guard.check(1010, "wild") is Verdict.GAP
    assert guard.check(11, "t11") is Verdict.RESUMED  # the PLC went on where it was
    assert [guard.check(s, f"t{s}") for s in range(12, 40)] == [Verdict.NEW] * 28
    assert [guard.check(s, f"t{s}") for s in range(40, 1020)] == [Verdict.NEW] * 980


def test_a_real_jump_ahead_is_kept() -> None:
    guard = SequenceGuard()
    guard.check(10, "t10")
    assert guard.check(1010, "t1010") is Verdict.GAP
    assert guard.check(1011, "t1011") is Verdict.NEW
    assert guard.check(11, "late") is Verdict.BACKWARDS  # the jump is confirmed: no way back


def test_a_renumbering_plc_is_followed_after_a_bounded_run() -> None:
    guard = SequenceGuard()
    for s in range(500, 510):
        guard.check(s, f"old{s}")
    verdicts = [guard.check(s, f"new{s}") for s in range(1, 11)]
    assert verdicts[: RESYNC_AFTER - 1] == [Verdict.BACKWARDS] * (RESYNC_AFTER - 1)
    assert verdicts[RESYNC_AFTER - 1] is Verdict.RESYNC
    assert verdicts[RESYNC_AFTER:] == [Verdict.NEW] * (10 - RESYNC_AFTER)
    assert guard.check(1, "new1") is Verdict.DUPLICATE  # the run counts as delivered
    scattered = SequenceGuard()
    scattered.check(500, "x")
    assert [scattered.check(s, "y") for s in (7, 3, 9, 1, 4)] == [Verdict.BACKWARDS] * 5


def test_checker_alarms_once_for_a_renumbering_and_clears_when_in_sequence() -> None:
    alarms = Alarms(None, lambda: 0.0)
    checker = TelegramChecker("L1", alarms)
    for s in range(100, 110):
        checker.admit(RawTelegram(s, REQUEST, s, barcode=b"OLD"), 0.0)
    delivered = [
        checker.admit(RawTelegram(s, REQUEST, s, barcode=b"NEW"), 0.0) for s in range(1, 21)
    ]
    faults = [t.fault for t in delivered if isinstance(t, DestinationRequest)]
    assert len(faults) == 20
    assert all("went backwards" in f for f in faults[: RESYNC_AFTER - 1])
    assert faults[RESYNC_AFTER - 1 :] == [""] * (21 - RESYNC_AFTER)
    assert checker.faults == RESYNC_AFTER - 1
    records = [(source, active) for _, source, _, active in alarms.history]
    assert records.count(("L1/telegram-sequence", True)) == 1
    assert records.count(("L1/malformed-telegram", True)) == 1
    assert not alarms.active


def test_checker_takes_back_the_loss_of_a_wild_jump() -> None:
    alarms = Alarms(None, lambda: 0.0)
    checker = TelegramChecker("L1", alarms)
    for s in (1, 2, 1002, 3, 4):
        telegram = checker.admit(RawTelegram(s, REQUEST, s, barcode=b"A"), 0.0)
        assert isinstance(telegram, DestinationRequest)
        assert telegram.fault == ""
    assert (checker.lost, checker.faults) == (0, 0)
    sources = [(source, active) for _, source, _, active in alarms.history]
    assert sources == [
        ("L1/telegrams-lost", True),
        ("L1/telegram-sequence", True),
        ("L1/telegrams-lost", False),
        ("L1/telegram-sequence", False),
    ]


def test_a_barcode_over_32_bytes_is_malformed_never_truncated() -> None:
    long = b"CG" + b"7" * 38
    assert "40 bytes" in barcode_fault(long)
    marked = fit_barcode(long)
    assert len(marked) == BARCODE_BYTES
    assert "longer than 32 bytes" in barcode_fault(marked)
    assert fit_barcode(b"X" * BARCODE_BYTES) == b"X" * BARCODE_BYTES
    assert barcode_fault(b"X" * BARCODE_BYTES) == ""


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
