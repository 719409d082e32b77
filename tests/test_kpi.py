"""The clearance KPIs: verdicts at clearance or when the target passes, rolling windows."""

from __future__ import annotations

from controller.core.kpi import Kpis
from controller.core.reasons import Reason
from controller.core.views import Share


def test_verdict_comes_at_clearance_or_when_the_target_passes() -> None:
    k = Kpis(target_s=150, windows_s=(300, 3600))
    k.arrived("L1", 1, 0.0)
    k.arrived("L1", 2, 0.0)
    k.arrived("L1", 3, 10.0)
    k.cleared("L1", 1, 0.0, now=100.0)  # hit
    k.tick(149.0)
    assert (k.hits, k.misses) == (1, 0)  # parcel 2 may still make it
    k.tick(151.0)
    assert (k.hits, k.misses) == (1, 1)  # parcel 2 missed at 150 s, still uncleared
    k.cleared("L1", 2, 0.0, now=400.0)  # clears late: bucketed, not counted twice
    k.cleared("L1", 3, 10.0, now=170.0)  # 160 s
    snap = k.snapshot(400.0)
    assert snap["verdicts"] == 3
    assert snap["share_within_target"] == 1 / 3
    assert snap["buckets"] == {"<=150s": 1, "150-300s": 1, ">300s": 1}
    assert snap["pending"] == 0


def test_rolling_windows_forget_old_verdicts() -> None:
    k = Kpis(target_s=150, windows_s=(300, 3600))
    for i in range(10):
        k.arrived("L1", i, 0.0)
        k.cleared("L1", i, 0.0, now=50.0)
    for i in range(10, 15):
        k.arrived("L1", i, 1000.0)
    snap = k.snapshot(1200.0)  # the five late ones missed at 1150 s
    assert snap["rolling"] == {"300s": 0.0, "3600s": 10 / 15}
    assert snap["share_within_target"] == 10 / 15


def test_counts_by_lane_and_reason() -> None:
    k = Kpis()
    k.decided("L1", 1, (Reason.LOW_RISK_CLEAN_XRAY,))
    k.decided("L1", 2, (Reason.RISK_RED, Reason.XRAY_ALARM))
    k.decided("L2", 2, (Reason.RISK_RED,))
    snap = k.snapshot(0.0)
    assert snap["by_lane"] == {"L1/1": 1, "L1/2": 1, "L2/2": 1}
    assert snap["by_reason"] == {"RISK_RED": 2, "LOW_RISK_CLEAN_XRAY": 1, "XRAY_ALARM": 1}
    assert snap["decisions"] == 3


def test_bucket_names_follow_the_target() -> None:
    k = Kpis(target_s=120)
    k.arrived("L1", 1, 0.0)
    k.cleared("L1", 1, 0.0, now=200.0)
    assert k.snapshot(200.0)["buckets"] == {"<=120s": 0, "120-240s": 1, ">240s": 0}


def test_verdicts_are_counted_by_hour_and_by_line() -> None:
    k = Kpis(target_s=150.0)
    k.arrived("L1", 1, 3500.0)
    k.cleared("L1", 1, 3500.0, 3600.0)  # a hit at the start of hour 1
    k.arrived("L2", 2, 3500.0)
    k.cleared("L2", 2, 3500.0, 3700.0)  # a miss, also in hour 1
    k.arrived("L1", 3, 100.0)  # never cleared: a miss when its target passes, in hour 0
    view = k.view(now=4000.0)
    assert view.by_hour == {0: Share(0, 1), 1: Share(1, 1)}
    assert view.by_line == {"L1": Share(1, 1), "L2": Share(0, 1)}
    assert view.overall == Share(1, 2)
    assert view.overall.share == 1 / 3
    assert view.as_dict()["by_hour"] == {"0": 0.0, "1": 0.5}
    assert view.as_dict()["by_line"] == {"L1": 0.5, "L2": 0.0}


def test_a_view_is_a_snapshot_that_later_verdicts_do_not_change() -> None:
    k = Kpis(target_s=150.0)
    k.arrived("L1", 1, 0.0)
    before = k.view(now=10.0)
    k.cleared("L1", 1, 0.0, 20.0)
    assert before.overall == Share(0, 0)
    assert before.overall.share is None
    assert k.view(now=30.0).overall == Share(1, 0)
