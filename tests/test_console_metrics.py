"""``/metrics``: the site collector read through the text exposition, as Prometheus reads it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from controller.console.metrics import SiteCollector, metrics_registry
from controller.core.domain import LaneStatus
from controller.core.kpi import Kpis
from controller.core.link import LinkState
from controller.core.reasons import Reason
from controller.core.views import (
    AlarmView,
    ControllerView,
    ForwarderView,
    KpiView,
    LineView,
    Share,
    SiteView,
    SorterHealth,
    XrayView,
)

Families = dict[str, Metric]


def scrape(read: Callable[[], SiteView]) -> tuple[str, Families]:
    """The exposition text of a private registry over ``read``, and its parsed families."""
    text = generate_latest(metrics_registry(read)).decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of ``family`` named ``sample`` (by default the family's name, with
    ``_total`` for a counter) whose labels include ``labels``; fails on none or several."""
    names = {sample} if sample else {family, f"{family}_total"}
    found = [
        s.value
        for s in families[family].samples
        if s.name in names and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (family, names, labels, found)
    return float(found[0])


def samples(families: Families, family: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, float(s.value)) for s in families[family].samples]


def kpi_view(
    target_s: float = 150.0,
    overall: Share | None = None,
    rolling: dict[str, Share] | None = None,
    by_line: dict[str, Share] | None = None,
    buckets: dict[str, int] | None = None,
    cleared_s_sum: float = 0.0,
) -> KpiView:
    return KpiView(
        target_s=target_s,
        overall=overall or Share(),
        rolling=rolling or {},
        by_hour={},
        by_line=by_line or {},
        buckets=buckets or {},
        cleared_s_sum=cleared_s_sum,
        by_lane={},
        by_reason={},
        by_state={},
        pending=0,
        decisions=0,
        deadline_misses=0,
        recirculations=0,
        illegal_transitions=0,
    )


def site_view(
    kpis: KpiView,
    lines: tuple[LineView, ...] = (),
    forwarder: ForwarderView | None = None,
    xray: XrayView | None = None,
    links: dict[str, LinkState] | None = None,
    alarms: tuple[AlarmView, ...] = (),
) -> SiteView:
    return SiteView(
        site="FRA-1",
        controller=ControllerView(clock_s=1000.0, kpis=kpis, lines=lines, holds=2, open_parcels=7),
        risk_results=1234,
        risk_results_evicted=56,
        journal_rows=560,
        journal_commits=31,
        forwarder=forwarder,
        links=links or {},
        alarms=alarms,
        xray=xray,
    )


@pytest.fixture
def live_kpis() -> KpiView:
    """A real :class:`Kpis` fed parcels on two lines: 130 s (hit), 200 s and 400 s (late),
    one left pending, one that never clears (a miss when 150 s pass)."""
    k = Kpis(target_s=150.0, windows_s=(300.0, 3600.0))
    for tid, at in ((1, 0.0), (2, 0.0), (3, 10.0), (4, 20.0)):
        k.arrived("L1" if tid < 3 else "L2", tid, at)
    k.cleared("L1", 1, 0.0, now=130.0)
    k.cleared("L1", 2, 0.0, now=200.0)
    k.cleared("L2", 3, 10.0, now=410.0)
    k.arrived("L2", 5, 390.0)  # still within its target at 420 s: pending
    k.decided("L1", 2, (Reason.LOW_RISK_CLEAN_XRAY,))
    k.decided("L1", 3, (Reason.RISK_RED, Reason.XRAY_ALARM))
    k.decided("L2", 3, (Reason.RISK_RED,))
    k.closed("released")
    k.closed("released")
    k.closed("inspected")
    k.deadline_misses += 1
    k.recirculations += 2
    return k.view(420.0)


def test_histogram_buckets_are_cumulative_and_match_the_kpis(live_kpis: KpiView) -> None:
    assert dict(live_kpis.buckets) == {"<=150s": 1, "150-300s": 1, ">300s": 1}
    _, fam = scrape(lambda: site_view(live_kpis))
    hist = fam["cargogate_clearance_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"150.0": 1.0, "300.0": 2.0, "+Inf": 3.0}
    assert value(fam, "cargogate_clearance_seconds", "cargogate_clearance_seconds_count") == 3.0
    assert value(fam, "cargogate_clearance_seconds", "cargogate_clearance_seconds_sum") == (
        pytest.approx(130.0 + 200.0 + 400.0)
    )
    assert value(fam, "cargogate_clearance_target_seconds") == 150.0


def test_bucket_bounds_follow_the_target_not_the_names() -> None:
    k = Kpis(target_s=90.0)
    for tid, took in enumerate((10.0, 100.0, 170.0, 200.0, 500.0)):
        k.arrived("L1", tid, 0.0)
        k.cleared("L1", tid, 0.0, now=took)
    _, fam = scrape(lambda: site_view(k.view(600.0)))
    buckets = [
        (s.labels["le"], s.value)
        for s in fam["cargogate_clearance_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets == [("90.0", 1.0), ("180.0", 3.0), ("+Inf", 5.0)]


def test_shares_overall_rolling_and_per_line(live_kpis: KpiView) -> None:
    _, fam = scrape(lambda: site_view(live_kpis))
    # verdicts: 1 hit (130 s), 3 misses (200 s, 400 s, never cleared); parcel 5 pending
    assert (live_kpis.overall.hits, live_kpis.overall.misses, live_kpis.pending) == (1, 3, 1)
    assert value(fam, "cargogate_share_within_target_ratio") == 0.25
    rolling = fam["cargogate_share_within_target_rolling_ratio"]
    assert {s.labels["window"]: s.value for s in rolling.samples} == {
        "300s": 0.25,
        "3600s": 0.25,
    }
    assert value(fam, "cargogate_line_share_within_target_ratio", line="L1") == 0.5
    assert value(fam, "cargogate_line_share_within_target_ratio", line="L2") == 0.0
    assert value(fam, "cargogate_clearance_verdicts", verdict="hit") == 1.0
    assert value(fam, "cargogate_clearance_verdicts", verdict="miss") == 3.0
    assert value(fam, "cargogate_line_clearance_verdicts", line="L2", verdict="miss") == 2.0
    assert value(fam, "cargogate_verdicts_pending") == 1.0


def test_decisions_reasons_states_and_tracker_counters(live_kpis: KpiView) -> None:
    text, fam = scrape(lambda: site_view(live_kpis))
    assert value(fam, "cargogate_parcels_decided", line="L1", lane="2") == 1.0
    assert value(fam, "cargogate_parcels_decided", line="L1", lane="3") == 1.0
    assert value(fam, "cargogate_parcels_decided", line="L2", lane="3") == 1.0
    assert value(fam, "cargogate_decisions") == 3.0
    assert value(fam, "cargogate_decision_reasons", reason="RISK_RED") == 2.0
    assert value(fam, "cargogate_decision_reasons", reason="XRAY_ALARM") == 1.0
    assert value(fam, "cargogate_parcels_closed", state="released") == 2.0
    assert value(fam, "cargogate_parcels_closed", state="inspected") == 1.0
    assert value(fam, "cargogate_deadline_misses") == 1.0
    assert value(fam, "cargogate_recirculations") == 2.0
    assert value(fam, "cargogate_illegal_transitions") == 0.0
    # counters follow the naming rule: the exposed series end in _total
    for name in ("parcels_decided", "decision_reasons", "parcels_closed", "journal_rows"):
        assert f"# TYPE cargogate_{name}_total counter" in text
        assert fam[f"cargogate_{name}"].type == "counter"
        assert all(s.name.endswith("_total") for s in fam[f"cargogate_{name}"].samples)


def test_every_family_is_prefixed_documented_and_labelled_with_the_site(
    live_kpis: KpiView,
) -> None:
    view = site_view(
        live_kpis,
        lines=(LineView("L1", SorterHealth(LinkState.UP, "execute", 0.2), {}, 1, 0, 0),),
        forwarder=ForwarderView(True, None, 0, 0, 0),
        xray=XrayView("ready", 0, 0, 0, 0.0),
        links={"L1": LinkState.UP},
    )
    _, fam = scrape(lambda: view)
    for family in fam.values():
        assert family.name.startswith("cargogate_")
        assert family.documentation
        for s in family.samples:
            assert s.labels["site"] == "FRA-1", s


def test_link_state_is_one_for_the_current_state_only() -> None:
    links = {"central database": LinkState.DOWN, "risk feeds": LinkState.DEGRADED}
    line = LineView("L1", SorterHealth(LinkState.CONNECTING), {}, 0, 0, 0)
    _, fam = scrape(lambda: site_view(kpi_view(), lines=(line,), links=links))
    got = {
        (s.labels["part"], s.labels["state"]): s.value for s in fam["cargogate_link_state"].samples
    }
    for part, current in links.items():
        for state in LinkState:
            assert got[(part, state.value)] == (1.0 if state is current else 0.0)
    assert len(got) == 2 * len(LinkState)
    assert value(fam, "cargogate_line_link_state", line="L1", state="connecting") == 1.0
    assert value(fam, "cargogate_line_link_state", line="L1", state="up") == 0.0


def test_line_gauges_health_and_lane_status() -> None:
    lines = (
        LineView(
            "L1",
            SorterHealth(LinkState.UP, "execute", 0.75),
            {3: LaneStatus.FULL, 4: LaneStatus.BLOCKED},
            on_belt=12,
            at_inspection=3,
            awaiting_review=2,
        ),
        LineView("L2", SorterHealth(LinkState.DOWN), {}, 0, 0, 0),
    )
    alarms = (
        AlarmView("L2", "PLC link down", 10.0),
        AlarmView("risk", "feed late", 20.0, acknowledged_by="amira"),
    )
    _, fam = scrape(lambda: site_view(kpi_view(), lines=lines, alarms=alarms))
    assert value(fam, "cargogate_line_parcels_on_belt", line="L1") == 12.0
    assert value(fam, "cargogate_line_parcels_at_inspection", line="L1") == 3.0
    assert value(fam, "cargogate_line_parcels_awaiting_review", line="L1") == 2.0
    assert value(fam, "cargogate_line_parcels_on_belt", line="L2") == 0.0
    # heartbeat and PackML state only where the PLC reports them
    assert samples(fam, "cargogate_line_heartbeat_age_seconds") == [
        ("cargogate_line_heartbeat_age_seconds", {"site": "FRA-1", "line": "L1"}, 0.75)
    ]
    assert samples(fam, "cargogate_line_packml_state") == [
        ("cargogate_line_packml_state", {"site": "FRA-1", "line": "L1", "state": "execute"}, 1.0)
    ]
    assert value(fam, "cargogate_lane_status", line="L1", lane="3", status="full") == 1.0
    assert value(fam, "cargogate_lane_status", line="L1", lane="3", status="blocked") == 0.0
    assert value(fam, "cargogate_lane_status", line="L1", lane="4", status="blocked") == 1.0
    assert not [s for s in fam["cargogate_lane_status"].samples if s.labels["line"] == "L2"]
    assert value(fam, "cargogate_alarms_active") == 2.0
    assert value(fam, "cargogate_alarms_unacknowledged") == 1.0
    assert value(fam, "cargogate_holds") == 2.0
    assert value(fam, "cargogate_parcels_open") == 7.0


def test_services_forwarder_and_xray_when_present() -> None:
    view = site_view(
        kpi_view(),
        forwarder=ForwarderView(
            connected=False, last_error="timeout", backlog=420, shipped_total=9000, watermark=77
        ),
        xray=XrayView("restarting", images=5000, failures=3, restarts=1, last_run_s=0.042),
    )
    _, fam = scrape(lambda: view)
    assert value(fam, "cargogate_risk_results") == 1234.0
    assert value(fam, "cargogate_risk_results_evicted") == 56.0
    assert value(fam, "cargogate_journal_rows") == 560.0
    assert value(fam, "cargogate_journal_commits") == 31.0
    assert value(fam, "cargogate_forwarder_connected") == 0.0
    assert value(fam, "cargogate_forwarder_error") == 1.0
    assert value(fam, "cargogate_forwarder_backlog_rows") == 420.0
    assert value(fam, "cargogate_forwarder_shipped_rows") == 9000.0
    assert fam["cargogate_forwarder_shipped_rows"].type == "counter"
    assert value(fam, "cargogate_forwarder_watermark") == 77.0
    assert value(fam, "cargogate_xray_inference_state", state="restarting") == 1.0
    assert value(fam, "cargogate_xray_inference_images") == 5000.0
    assert value(fam, "cargogate_xray_inference_failures") == 3.0
    assert value(fam, "cargogate_xray_inference_restarts") == 1.0
    assert value(fam, "cargogate_xray_inference_last_run_seconds") == pytest.approx(0.042)


def test_no_forwarder_or_xray_metrics_without_them() -> None:
    text, fam = scrape(lambda: site_view(kpi_view()))
    assert not [name for name in fam if name.startswith("cargogate_forwarder_")]
    assert not [name for name in fam if name.startswith("cargogate_xray_")]
    assert "cargogate_forwarder" not in text
    assert "cargogate_xray" not in text
    assert "cargogate_journal_rows_total" in text


def test_empty_site_and_none_shares_scrape_cleanly() -> None:
    """Before the first verdict every share is None: no share samples, no NaN, no error."""
    kpis = Kpis(target_s=150.0, windows_s=(300.0,)).view(0.0)
    assert kpis.overall.share is None
    text, fam = scrape(lambda: site_view(kpis))
    assert not fam["cargogate_share_within_target_ratio"].samples
    assert not fam["cargogate_share_within_target_rolling_ratio"].samples
    assert "NaN" not in text
    buckets = [s for s in fam["cargogate_clearance_seconds"].samples if s.name.endswith("_bucket")]
    assert [(s.labels["le"], s.value) for s in buckets] == [
        ("150.0", 0.0),
        ("300.0", 0.0),
        ("+Inf", 0.0),
    ]
    # a bare view built by hand: no lines, no buckets, no windows
    _, fam = scrape(lambda: site_view(kpi_view(rolling={"300s": Share()})))
    assert not fam["cargogate_share_within_target_rolling_ratio"].samples
    assert not fam["cargogate_line_parcels_on_belt"].samples
    assert value(fam, "cargogate_clearance_seconds", "cargogate_clearance_seconds_count") == 0.0


def test_odd_values_drop_samples_rather_than_fail_the_scrape() -> None:
    odd: Any = None
    kpis = kpi_view(
        target_s=0.0,  # no bounds to place: only +Inf
        overall=Share(cast(int, odd), 3),
        buckets={"fast": 2, "slow": 1, "late": 4},  # not the KPI's names: read in order
        cleared_s_sum=cast(float, odd),
    )
    line = LineView(
        "L1",
        SorterHealth(cast(LinkState, "flapping"), "", None),
        {5: cast(LaneStatus, 9)},
        on_belt=cast(int, "many"),
        at_inspection=0,
        awaiting_review=0,
    )
    _, fam = scrape(lambda: site_view(kpis, lines=(line,)))
    assert not fam["cargogate_share_within_target_ratio"].samples
    assert not fam["cargogate_line_parcels_on_belt"].samples
    assert not fam["cargogate_line_heartbeat_age_seconds"].samples
    assert not fam["cargogate_line_packml_state"].samples
    assert [
        (s.labels["le"], s.value)
        for s in fam["cargogate_clearance_seconds"].samples
        if s.name.endswith("_bucket")
    ] == [("+Inf", 7.0)]
    assert value(fam, "cargogate_line_link_state", line="L1", state="flapping") == 1.0
    assert value(fam, "cargogate_line_link_state", line="L1", state="up") == 0.0
    assert value(fam, "cargogate_lane_status", line="L1", lane="5", status="9") == 1.0
    # a target that is no number at all: the counts are read in order, still no error
    _, fam = scrape(lambda: site_view(kpi_view(target_s=odd, buckets={"a": 1, "b": 2})))
    assert value(fam, "cargogate_clearance_seconds", "cargogate_clearance_seconds_count") == 3.0
    assert not fam["cargogate_clearance_target_seconds"].samples


def test_one_read_per_scrape_and_a_private_registry(live_kpis: KpiView) -> None:
    reads: list[int] = []

    def read() -> SiteView:
        reads.append(1)
        return site_view(live_kpis)

    registry = metrics_registry(read)
    assert reads == []  # registering does not read the site
    assert registry is not REGISTRY
    text = generate_latest(registry).decode()
    assert reads == [1]
    assert "process_" not in text
    assert "python_gc" not in text
    assert len(list(SiteCollector(read).collect())) == len(
        list(text_string_to_metric_families(text))
    )
    assert reads == [1, 1]


def test_a_failing_read_fails_the_scrape() -> None:
    def read() -> SiteView:
        raise RuntimeError("no snapshot")

    with pytest.raises(RuntimeError, match="no snapshot"):
        generate_latest(metrics_registry(read))


def test_the_example_dashboard_reads_only_series_the_collector_exposes(
    live_kpis: KpiView,
) -> None:
    """config/grafana/cargogate.json stays in step with the metric names."""
    path = Path(__file__).resolve().parents[1] / "config" / "grafana" / "cargogate.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    view = site_view(
        live_kpis,
        lines=(LineView("L1", SorterHealth(LinkState.UP, "execute", 0.2), {}, 1, 0, 0),),
        forwarder=ForwarderView(True, None, 0, 0, 0),
        xray=XrayView("ready", 0, 0, 0, 0.0),
        links={"L1": LinkState.UP},
    )
    _, fam = scrape(lambda: view)
    exposed = {s.name for f in fam.values() for s in f.samples}
    used = {name for e in exprs for name in re.findall(r"cargogate_[a-z_]+", e)}
    assert used
    assert used <= exposed, used - exposed
