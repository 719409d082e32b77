"""Table-driven tests of the decision policy: every rule and every missing-input case."""

from __future__ import annotations

import pytest

from controller.core.domain import (
    LaneKind,
    ReviewOutcome,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.policy import DecisionPolicy, PolicyInputs
from controller.core.reasons import Reason
from controller.core.settings import Policy
from tests.support import CLEAN

RELEASE, INSPECT, EXCEPT = LaneKind.RELEASE, LaneKind.INSPECTION, LaneKind.EXCEPTION
GREEN = RiskResult("H1", RiskChannel.GREEN, 0.05, "cotton t-shirts")
YELLOW = RiskResult("H1", RiskChannel.YELLOW, 0.20, "cotton t-shirts")
RED = RiskResult("H1", RiskChannel.RED, 0.90, "cotton t-shirts")
GREEN_HIGH = RiskResult("H1", RiskChannel.GREEN, 0.55, "cotton t-shirts")
GREEN_PHONE = RiskResult("H1", RiskChannel.GREEN, 0.05, "Mobile PHONE with charger")


def xray(**scores: float) -> XrayResult:
    return XrayResult(XrayStatus.OK, {**CLEAN, **scores}, "m1")


CLEAN_XRAY = xray()
BASE = PolicyInputs(no_read=False, risk=GREEN, xray=CLEAN_XRAY, held=False, audit_draw=0.99)
POLICY = DecisionPolicy(Policy(audit_rate=0.03, min_audit_rate=0.01))

CASES = [
    # (id, changes to BASE, destination, reasons)
    ("green + clean x-ray releases", {}, RELEASE, (Reason.LOW_RISK_CLEAN_XRAY,)),
    ("barcode no-read", {"no_read": True}, EXCEPT, (Reason.NO_READ,)),
    (
        "no-read wins over everything",
        {"no_read": True, "risk": None, "held": True},
        EXCEPT,
        (Reason.NO_READ,),
    ),
    ("risk result missing", {"risk": None}, INSPECT, (Reason.RISK_MISSING,)),
    ("red channel", {"risk": RED}, INSPECT, (Reason.RISK_RED,)),
    ("yellow without review", {"risk": YELLOW}, INSPECT, (Reason.RISK_YELLOW_UNREVIEWED,)),
    (
        "yellow cleared by officer",
        {"risk": YELLOW, "review": ReviewOutcome.CLEAR},
        RELEASE,
        (Reason.OFFICER_CLEARED,),
    ),
    (
        "yellow, officer says inspect",
        {"risk": YELLOW, "review": ReviewOutcome.INSPECT},
        INSPECT,
        (Reason.OFFICER_REVIEW_INSPECT, Reason.RISK_YELLOW_UNREVIEWED),
    ),
    ("green but score above release max", {"risk": GREEN_HIGH}, INSPECT, (Reason.RISK_SCORE_HIGH,)),
    (
        "officer clear cannot lift a high score",
        {"risk": GREEN_HIGH, "review": ReviewOutcome.CLEAR},
        INSPECT,
        (Reason.RISK_SCORE_HIGH,),
    ),
    (
        "officer clear cannot lift red",
        {"risk": RED, "review": ReviewOutcome.CLEAR},
        INSPECT,
        (Reason.RISK_RED,),
    ),
    ("officer hold", {"held": True}, INSPECT, (Reason.OFFICER_HOLD,)),
    (
        "hold beats officer clear",
        {"held": True, "risk": YELLOW, "review": ReviewOutcome.CLEAR},
        INSPECT,
        (Reason.OFFICER_HOLD,),
    ),
    ("random audit draw below rate", {"audit_draw": 0.01}, INSPECT, (Reason.RANDOM_AUDIT,)),
    (
        "audit draw at rate does not select",
        {"audit_draw": 0.03},
        RELEASE,
        (Reason.LOW_RISK_CLEAN_XRAY,),
    ),
    (
        "x-ray missing",
        {"xray": XrayResult.fault(XrayStatus.MISSING)},
        INSPECT,
        (Reason.XRAY_MISSING,),
    ),
    ("x-ray failed", {"xray": XrayResult.fault(XrayStatus.FAILED)}, INSPECT, (Reason.XRAY_FAILED,)),
    ("x-ray late", {"xray": XrayResult.fault(XrayStatus.LATE)}, INSPECT, (Reason.XRAY_LATE,)),
    (
        "x-ray bad image",
        {"xray": XrayResult.fault(XrayStatus.BAD_IMAGE)},
        INSPECT,
        (Reason.XRAY_BAD_IMAGE,),
    ),
    (
        "officer clear cannot replace a missing image",
        {"xray": XrayResult.fault(XrayStatus.MISSING), "review": ReviewOutcome.CLEAR},
        INSPECT,
        (Reason.XRAY_MISSING,),
    ),
    ("firearm alarm", {"xray": xray(firearm=0.9)}, INSPECT, (Reason.XRAY_ALARM,)),
    ("firearm at alarm threshold", {"xray": xray(firearm=0.30)}, INSPECT, (Reason.XRAY_ALARM,)),
    ("blade ambiguous", {"xray": xray(blade=0.2)}, INSPECT, (Reason.XRAY_AMBIGUOUS_UNREVIEWED,)),
    (
        "blade ambiguous, officer clears",
        {"xray": xray(blade=0.2), "review": ReviewOutcome.CLEAR},
        RELEASE,
        (Reason.OFFICER_CLEARED,),
    ),
    (
        "officer clear cannot lift an alarm",
        {"xray": xray(firearm=0.9), "review": ReviewOutcome.CLEAR},
        INSPECT,
        (Reason.XRAY_ALARM,),
    ),
    (
        "undeclared battery",
        {"xray": xray(lithium_battery=0.9)},
        INSPECT,
        (Reason.DECLARATION_MISMATCH,),
    ),
    (
        "declared battery is expected",
        {"xray": xray(lithium_battery=0.9), "risk": GREEN_PHONE},
        RELEASE,
        (Reason.LOW_RISK_CLEAN_XRAY,),
    ),
    (
        "declared phone does not excuse a firearm",
        {"xray": xray(firearm=0.9), "risk": GREEN_PHONE},
        INSPECT,
        (Reason.XRAY_ALARM,),
    ),
    (
        "model lacks a class the policy needs",
        {"xray": XrayResult(XrayStatus.OK, {"firearm": 0.0}, "other-model")},
        INSPECT,
        (Reason.XRAY_FAILED,),
    ),
    (
        "no risk and no image: both reasons",
        {"risk": None, "xray": XrayResult.fault(XrayStatus.LATE)},
        INSPECT,
        (Reason.RISK_MISSING, Reason.XRAY_LATE),
    ),
    (
        "every reason is kept",
        {"risk": RED, "held": True, "audit_draw": 0.0, "xray": xray(firearm=0.9)},
        INSPECT,
        (Reason.OFFICER_HOLD, Reason.RISK_RED, Reason.XRAY_ALARM, Reason.RANDOM_AUDIT),
    ),
]


@pytest.mark.parametrize(
    ("changes", "destination", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule(
    changes: dict[str, object], destination: LaneKind, reasons: tuple[Reason, ...]
) -> None:
    decision = POLICY.decide(BASE._replace(**changes))  # type: ignore[arg-type]
    assert decision.destination is destination
    assert decision.reasons == reasons
    assert decision.policy_version == POLICY.version


@pytest.mark.parametrize(
    ("changes", "wanted"),
    [
        ({"risk": YELLOW}, True),
        ({"xray": xray(blade=0.2)}, True),
        ({}, False),  # already released
        ({"risk": RED}, False),  # a clear would not change the outcome
        ({"risk": YELLOW, "held": True}, False),
        ({"risk": YELLOW, "audit_draw": 0.0}, False),
        ({"risk": YELLOW, "review": ReviewOutcome.INSPECT}, False),  # already reviewed
        ({"no_read": True}, False),
    ],
)
def test_review_is_wanted_only_where_a_clear_would_release(
    changes: dict[str, object], wanted: bool
) -> None:
    assert POLICY.wants_review(BASE._replace(**changes)) is wanted  # type: ignore[arg-type]


def test_review_switches_off_per_setting() -> None:
    strict = DecisionPolicy(Policy(review_yellow=False, review_ambiguous_xray=False))
    yellow = BASE._replace(risk=YELLOW, review=ReviewOutcome.CLEAR)
    assert strict.decide(yellow).destination is INSPECT
    ambiguous = BASE._replace(xray=xray(blade=0.2), review=ReviewOutcome.CLEAR)
    assert strict.decide(ambiguous).reasons == (Reason.XRAY_ALARM,)


def test_version_changes_with_thresholds_and_is_stable() -> None:
    assert DecisionPolicy(Policy()).version == DecisionPolicy(Policy()).version
    assert DecisionPolicy(Policy(release_max_score=0.2)).version != DecisionPolicy(Policy()).version


def test_release_is_never_given_without_positive_evidence() -> None:
    """Exhaustive sweep over the evidence space: release only with clean evidence or a clear."""
    risks = [None, GREEN, YELLOW, RED, GREEN_HIGH]
    xrays = [CLEAN_XRAY, xray(firearm=0.9), xray(blade=0.2)] + [
        XrayResult.fault(s) for s in XrayStatus if s is not XrayStatus.OK
    ]
    released = 0
    for risk in risks:
        for x in xrays:
            for held in (False, True):
                for review in (None, ReviewOutcome.CLEAR, ReviewOutcome.INSPECT):
                    for draw in (0.0, 0.5):
                        inputs = PolicyInputs(False, risk, x, held, draw, review)
                        d = POLICY.decide(inputs)
                        if d.destination is RELEASE:
                            released += 1
                            assert risk is not None
                            assert risk.channel is not RiskChannel.RED
                            assert x.status is XrayStatus.OK
                            assert not held
                            assert draw >= 0.03
                            assert review is not ReviewOutcome.INSPECT
                            assert d.reasons in (
                                (Reason.LOW_RISK_CLEAN_XRAY,),
                                (Reason.OFFICER_CLEARED,),
                            )
                            if d.reasons == (Reason.LOW_RISK_CLEAN_XRAY,):
                                assert risk is GREEN
                                assert x is CLEAN_XRAY
                        else:
                            assert d.reasons, "a non-release decision must say why"
    assert released > 0
