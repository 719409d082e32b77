"""Per-class alarm and clear thresholds chosen on the validation split (never the test split).

alarm: the false-alarm budget comes first — never below the score at which validation false
alarms fall to ``max_false_alarm`` (4 %, a margin under the 5 % target). Above that floor it
is as high as 0.5 (or the 1 % false-alarm score, if higher) while validation recall stays
≥ ``target_recall``; a class that cannot reach the recall inside the budget keeps the floor,
and the model card reports its recall honestly. clear: half the lowest validation positive
score, capped at alarm; the band between clear and alarm is for an officer's review.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def recall_and_false_alarm(
    scores: npt.NDArray[np.floating], labels: npt.NDArray[np.floating], threshold: float
) -> tuple[float, float]:
    """(recall on positives, false-alarm rate on negatives) at ``score >= threshold``."""
    pos = labels > 0.5
    hit = scores >= threshold
    recall = float(hit[pos].mean()) if pos.any() else float("nan")
    false_alarm = float(hit[~pos].mean()) if (~pos).any() else float("nan")
    return recall, false_alarm


def _threshold_at_false_alarm(neg: npt.NDArray[np.floating], rate: float) -> float:
    """Lowest threshold at which at most ``rate`` of the sorted negatives score ≥ it."""
    allowed = int(np.floor(rate * len(neg)))
    return float(np.nextafter(np.float32(neg[len(neg) - allowed - 1]), np.float32(np.inf)))


def choose(
    scores: npt.NDArray[np.floating],
    labels: npt.NDArray[np.floating],
    *,
    target_recall: float = 0.995,
    max_false_alarm: float = 0.04,
    comfortable_false_alarm: float = 0.01,
) -> dict[str, float]:
    """Alarm and clear thresholds for one class from its validation scores and labels."""
    pos = np.sort(scores[labels > 0.5])
    neg = np.sort(scores[labels <= 0.5])
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("validation split: every class needs positives and negatives")
    misses = int(np.floor((1 - target_recall) * len(pos)))
    at_recall = float(pos[misses])
    floor = _threshold_at_false_alarm(neg, max_false_alarm)
    preferred = min(at_recall, max(_threshold_at_false_alarm(neg, comfortable_false_alarm), 0.5))
    alarm = max(floor, preferred)
    alarm = float(np.clip(alarm, 1e-4, 0.999))
    clear = float(np.clip(min(float(pos[0]) * 0.5, alarm), 1e-5, alarm))
    return {"alarm": round(alarm, 6), "clear": round(clear, 6)}
