"""The decision policy: a pure function from a parcel's evidence to a destination.

Release needs positive evidence — a known low risk and a clean X-ray, or an officer's clear
where the policy allows a review. Every other case goes to inspection (or exception when the
parcel cannot be identified), and the decision lists *every* reason that applied, so the audit
log says why in full. Thresholds come from the site file (:class:`controller.app.site.Policy`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """Everything the policy may look at for one parcel, and nothing else.

    ``audit_draw`` is a uniform draw in [0, 1) from the caller's seeded RNG, so the policy
    itself stays pure and a replay with the same draws gives the same decisions.
    """

    no_read: bool
    risk: RiskResult | None
    xray: XrayResult
    held: bool
    audit_draw: float
    review: ReviewOutcome | None = None


class DecisionPolicy:
    """Applies one validated set of policy settings; ``version`` identifies rules + settings."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        digest = hashlib.sha256(
            json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        self.version = f"r{RULES_REVISION}-{digest[:10]}"

    def decide(self, inputs: PolicyInputs) -> Decision:
        if inputs.no_read:
            return Decision(LaneKind.EXCEPTION, (Reason.NO_READ,), self.version)
        reasons = self._inspection_reasons(inputs)
        cleared_by_officer = inputs.review is ReviewOutcome.CLEAR and any(
            r in REVIEWABLE for r in reasons
        )
        if cleared_by_officer:
            reasons = [r for r in reasons if r not in REVIEWABLE]
        if reasons:
            return Decision(LaneKind.INSPECTION, tuple(reasons), self.version)
        release = Reason.OFFICER_CLEARED if cleared_by_officer else Reason.LOW_RISK_CLEAN_XRAY
        return Decision(LaneKind.RELEASE, (release,), self.version)

    def wants_review(self, inputs: PolicyInputs) -> bool:
        """True when an officer's clear would turn this parcel's inspection into a release:
        every reason to inspect it is one a review can lift."""
        if inputs.review is not None or inputs.no_read:
            return False
        reasons = self._inspection_reasons(inputs)
        return bool(reasons) and REVIEWABLE.issuperset(reasons)

    def _inspection_reasons(self, inputs: PolicyInputs) -> list[Reason]:
        s = self.settings
        reasons: list[Reason] = []
        if inputs.held:
            reasons.append(Reason.OFFICER_HOLD)
        if inputs.review is ReviewOutcome.INSPECT:
            reasons.append(Reason.OFFICER_REVIEW_INSPECT)
        risk = inputs.risk
        if risk is None:
            reasons.append(Reason.RISK_MISSING)
        elif risk.channel is RiskChannel.RED:
            reasons.append(Reason.RISK_RED)
        else:
            if risk.score > s.release_max_score:
                reasons.append(Reason.RISK_SCORE_HIGH)
            if risk.channel is RiskChannel.YELLOW:
                reasons.append(
                    Reason.RISK_YELLOW_UNREVIEWED if s.review_yellow else Reason.RISK_SCORE_HIGH
                )
        reasons.extend(self._xray_reasons(inputs.xray, risk.declared_goods if risk else ""))
        if inputs.audit_draw < s.audit_rate:
            reasons.append(Reason.RANDOM_AUDIT)
        return list(dict.fromkeys(reasons))  # keep order, drop repeats

    def _xray_reasons(self, xray: XrayResult, declared_goods: str) -> list[Reason]:
        if xray.status is not XrayStatus.OK:
            return [_XRAY_FAULTS[xray.status]]
        declared = declared_goods.lower()
        reasons: list[Reason] = []
        for name, thresholds in self.settings.classes.items():
            score = xray.scores.get(name)
            if score is None:  # the model does not score a class this policy relies on
                reasons.append(Reason.XRAY_FAILED)
                continue
            if score < thresholds.clear:
                continue
            if any(word.lower() in declared for word in thresholds.permitted_by):
                continue  # seen and declared: expected, not suspicious
            if score >= thresholds.alarm:
                reasons.append(
                    Reason.DECLARATION_MISMATCH if thresholds.permitted_by else Reason.XRAY_ALARM
                )
            elif self.settings.review_ambiguous_xray:
                reasons.append(Reason.XRAY_AMBIGUOUS_UNREVIEWED)
            else:
                reasons.append(Reason.XRAY_ALARM)
        return reasons
