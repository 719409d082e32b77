"""The decision policy: a pure function from a parcel's evidence to a destination.

Release needs positive evidence — a known low risk and a clean X-ray, or an officer's clear
where the policy allows a review. Every other case goes to inspection (or exception when the
parcel cannot be identified), and the decision lists *every* reason that applied, so the audit
log says why in full. Thresholds come from the site file (:class:`controller.app.site.Policy`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import NamedTuple

from controller.core.domain import (
    Decision,
    LaneKind,
    ReviewOutcome,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.reasons import Reason
from controller.core.settings import Policy as PolicySettings

#: Bump when the rules below change meaning; thresholds are covered by the settings hash.
RULES_REVISION = 1

_XRAY_FAULTS = {
    XrayStatus.MISSING: Reason.XRAY_MISSING,
    XrayStatus.FAILED: Reason.XRAY_FAILED,
    XrayStatus.LATE: Reason.XRAY_LATE,
    XrayStatus.BAD_IMAGE: Reason.XRAY_BAD_IMAGE,
}

#: Reasons an officer's on-screen clear can lift; any other inspection reason stands.
REVIEWABLE = frozenset({Reason.RISK_YELLOW_UNREVIEWED, Reason.XRAY_AMBIGUOUS_UNREVIEWED})


class PolicyInputs(NamedTuple):
    """Everything the policy may look at for one parcel, and nothing else.

    ``audit_draw`` is a uniform draw in [0, 1) from the caller's seeded RNG, so the policy
    itself stays pure and a replay with the same draws gives the same decisions. A named
    tuple: one is made per parcel at line rate.
    """

    no_read: bool
    risk: RiskResult | None
    xray: XrayResult
    held: bool
    audit_draw: float
    review: ReviewOutcome | None = None


# Module constants: an enum member looked up on its class costs a dictionary walk per use.
_EXCEPTION, _INSPECTION, _RELEASE = LaneKind.EXCEPTION, LaneKind.INSPECTION, LaneKind.RELEASE
_RED, _YELLOW = RiskChannel.RED, RiskChannel.YELLOW
_CLEAR, _INSPECT = ReviewOutcome.CLEAR, ReviewOutcome.INSPECT
_OK = XrayStatus.OK


class DecisionPolicy:
    """Applies one validated set of policy settings; ``version`` identifies rules + settings."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        digest = hashlib.sha256(
            json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        self.version = f"r{RULES_REVISION}-{digest[:10]}"
        # Read once from the (frozen) settings rather than per parcel, as a pydantic model's
        # attribute costs a Python-level __getattr__ hook per read: the thresholds, those of
        # each X-ray class with its permitting words already lower-cased, and the answers
        # that carry no per-parcel data (values are immutable: one each serves every parcel).
        self._release_max_score = settings.release_max_score
        self._audit_rate = settings.audit_rate
        self._review_yellow = settings.review_yellow
        self._review_ambiguous_xray = settings.review_ambiguous_xray
        self._classes = tuple(
            (name, c.clear, c.alarm, tuple(word.lower() for word in c.permitted_by))
            for name, c in settings.classes.items()
        )
        self._no_read = Decision(_EXCEPTION, (Reason.NO_READ,), self.version)
        self._low_risk = Decision(_RELEASE, (Reason.LOW_RISK_CLEAN_XRAY,), self.version)
        self._officer_cleared = Decision(_RELEASE, (Reason.OFFICER_CLEARED,), self.version)

    def decide(self, inputs: PolicyInputs) -> Decision:
        if inputs.no_read:
            return self._no_read
        reasons = self._inspection_reasons(inputs)
        cleared_by_officer = inputs.review is _CLEAR and any(r in REVIEWABLE for r in reasons)
        if cleared_by_officer:
            reasons = [r for r in reasons if r not in REVIEWABLE]
        if reasons:
            return Decision(_INSPECTION, tuple(reasons), self.version)
        return self._officer_cleared if cleared_by_officer else self._low_risk

    def wants_review(self, inputs: PolicyInputs) -> bool:
        """True when an officer's clear would turn this parcel's inspection into a release:
        every reason to inspect it is one a review can lift."""
        if inputs.review is not None or inputs.no_read:
            return False
        reasons = self._inspection_reasons(inputs)
        return bool(reasons) and REVIEWABLE.issuperset(reasons)

    def _inspection_reasons(self, inputs: PolicyInputs) -> list[Reason]:
        reasons: list[Reason] = []
        if inputs.held:
            reasons.append(Reason.OFFICER_HOLD)
        if inputs.review is _INSPECT:
            reasons.append(Reason.OFFICER_REVIEW_INSPECT)
        risk = inputs.risk
        if risk is None:
            reasons.append(Reason.RISK_MISSING)
        elif risk.channel is _RED:
            reasons.append(Reason.RISK_RED)
        else:
            if risk.score > self._release_max_score:
                reasons.append(Reason.RISK_SCORE_HIGH)
            if risk.channel is _YELLOW:
                reasons.append(
                    Reason.RISK_YELLOW_UNREVIEWED if self._review_yellow else Reason.RISK_SCORE_HIGH
                )
        xray = inputs.xray
        if xray.status is not _OK:
            reasons.append(_XRAY_FAULTS[xray.status])
        else:
            self._xray_reasons(xray.scores, risk.declared_goods if risk else "", reasons)
        if inputs.audit_draw < self._audit_rate:
            reasons.append(Reason.RANDOM_AUDIT)
        if len(reasons) < 2:
            return reasons
        return list(dict.fromkeys(reasons))  # keep order, drop repeats

    def _xray_reasons(
        self, scores: Mapping[str, float], declared_goods: str, reasons: list[Reason]
    ) -> None:
        """Append the reasons the scores of a usable X-ray give."""
        declared = declared_goods.lower()
        for name, clear, alarm, permitted_by in self._classes:
            score = scores.get(name)
            if score is None:  # the model does not score a class this policy relies on
                reasons.append(Reason.XRAY_FAILED)
                continue
            if score < clear:
                continue
            if _mentions(declared, permitted_by):
                continue  # seen and declared: expected, not suspicious
            if score >= alarm:
                reasons.append(Reason.DECLARATION_MISMATCH if permitted_by else Reason.XRAY_ALARM)
            elif self._review_ambiguous_xray:
                reasons.append(Reason.XRAY_AMBIGUOUS_UNREVIEWED)
            else:
                reasons.append(Reason.XRAY_ALARM)


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    """Whether any of ``words`` occurs in ``text``."""
    for word in words:  # noqa: SIM110 - a loop, not any(): no generator per parcel
        if word in text:
            return True
    return False
