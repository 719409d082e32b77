"""Prometheus ``/metrics`` for one site: a custom collector over the site's read model.

Nothing in the core counts for Prometheus. On each scrape the collector takes one
:class:`~controller.core.views.SiteView` (the snapshot the console and the terminal view
read too) and turns it into metric families, so a dashboard shows the figures the floor sees
and the hot path never touches a metrics client. Every family carries a ``site`` label, so
one Prometheus can scrape several hubs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from controller.core.domain import LaneStatus
from controller.core.link import LinkState
from controller.core.views import (
    ForwarderView,
    KpiView,
    LineView,
    Share,
    SiteView,
    XrayView,
)

__all__ = ["PREFIX", "SiteCollector", "metrics_registry"]

PREFIX = "cargogate_"

_Family = CounterMetricFamily | GaugeMetricFamily

_LINK_STATES = tuple(s.value for s in LinkState)
_LANE_NAMES = {int(s): s.name.lower() for s in LaneStatus}
_LANE_STATES = tuple(_LANE_NAMES.values())


def _number(value: object) -> float | None:
    """``value`` as a sample value, or None for what is no number (None, a stray string):
    an odd figure drops one sample rather than failing the whole scrape."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return math.inf if value > 0 else -math.inf
    return None


def _add(family: _Family, labels: Sequence[str], value: object) -> None:
    """One sample, skipped when the value is no number."""
    number = _number(value)
    if number is not None:
        family.add_metric(list(labels), number)


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=("site", *labels))


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=("site", *labels))


def _enum(
    family: GaugeMetricFamily, labels: Sequence[str], current: object, known: Iterable[str]
) -> None:
    """Enum-style samples: one per known state, 1 for the current one and 0 for the rest,
    so a series exists for every state and a graph shows the switch rather than a gap. A
    state outside ``known`` still gets its own sample (1) instead of vanishing."""
    states = list(known)
    now = str(current)
    if now not in states:
        states.append(now)
    for state in states:
        family.add_metric([*labels, state], 1.0 if state == now else 0.0)


def _lane_state(status: object) -> str:
    """A lane status word's name; a word the enum does not know keeps its number."""
    name = _LANE_NAMES.get(int(status)) if isinstance(status, int) else None
    return name if name is not None else str(status)


def _split_lane(key: str) -> tuple[str, str]:
    """``"L1/2"`` → ``("L1", "2")``: the KPI keys decisions by ``"line/lane"``."""
    line, sep, lane = key.rpartition("/")
    return (line, lane) if sep else (key, "")


def _bucket_counts(kpis: KpiView) -> tuple[float, float, float]:
    """Cleared parcels within the target, up to twice it, beyond: the order in which
    :class:`controller.core.kpi.Kpis` gives its buckets (their names are for people)."""
    within, twice, beyond = ((_number(v) or 0.0) for v in [*kpis.buckets.values(), 0, 0, 0][:3])
    return within, twice, beyond


def _le(bound: float) -> str:
    """A bucket bound as the exposition format writes it (``150.0``, ``+Inf``)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


class SiteCollector:
    """A ``prometheus_client`` custom collector: every :meth:`collect` reads the site once
    (``read`` returns a fresh :class:`SiteView`) and yields the families built from it.

    ``read`` runs on the scraping thread; it must be cheap and safe to call there (return
    the latest snapshot the event loop took, rather than walk live objects). An exception
    from ``read`` fails the scrape, which is what Prometheus should see (``up == 0``); odd
    values inside a snapshot only drop their own samples.
    """

    def __init__(self, read: Callable[[], SiteView]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        view = self._read()
        site = str(view.site)
        yield from _kpi_families(site, view.kpis)
        yield from _floor_families(site, view)
        yield from _line_families(site, view.controller.lines)
        yield from _service_families(site, view)
        if view.forwarder is not None:
            yield from _forwarder_families(site, view.forwarder)
        if view.xray is not None:
            yield from _xray_families(site, view.xray)


def metrics_registry(read: Callable[[], SiteView]) -> CollectorRegistry:
    """A private registry holding only a :class:`SiteCollector` over ``read``: the console
    serves it on ``/metrics`` without the process-wide default registry (whose process and
    platform collectors, and whatever a library registered there, are not the site's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiteCollector(read))
    return registry


def _kpi_families(site: str, kpis: KpiView) -> Iterator[Metric]:
    """Decisions, verdicts, the share within the target and the clearance-time histogram."""
    decided = _counter(
        "parcels_decided",
        "Parcels given a lane by the controller, by line and lane (one per decision).",
        "line",
        "lane",
    )
    for key, n in kpis.by_lane.items():
        line, lane = _split_lane(str(key))
        _add(decided, (site, line, lane), n)
    yield decided

    yield _single(
        _counter("decisions", "Lane decisions taken, all lines together."), site, kpis.decisions
    )

    reasons = _counter(
        "decision_reasons",
        "Reasons given with decisions, by reason name; a decision can give several, so "
        "these add up to at least the decisions.",
        "reason",
    )
    for reason, n in kpis.by_reason.items():
        _add(reasons, (site, str(reason)), n)
    yield reasons

    closed = _counter("parcels_closed", "Parcels whose tracking closed, by final state.", "state")
    for state, n in kpis.by_state.items():
        _add(closed, (site, str(state)), n)
    yield closed

    yield _single(
        _gauge(
            "clearance_target_seconds",
            "The clearance target: a parcel cleared within this many seconds of arrival "
            "counts as a hit.",
        ),
        site,
        kpis.target_s,
    )

    verdicts = _counter(
        "clearance_verdicts",
        "Clearance verdicts: hit (cleared within the target) or miss (the target passed "
        "first); rate(hit) / rate(hit + miss) gives the share over any range.",
        "verdict",
    )
    _share_samples(verdicts, (site,), kpis.overall)
    yield verdicts

    line_verdicts = _counter(
        "line_clearance_verdicts", "Clearance verdicts by line (hit or miss).", "line", "verdict"
    )
    for line, share in kpis.by_line.items():
        _share_samples(line_verdicts, (site, str(line)), share)
    yield line_verdicts

    overall = _gauge(
        "share_within_target_ratio",
        "Share of parcels cleared within the target since start (0-1); absent before the "
        "first verdict.",
    )
    _add(overall, (site,), _share(kpis.overall))
    yield overall

    rolling = _gauge(
        "share_within_target_rolling_ratio",
        "Share of parcels cleared within the target over each rolling window (0-1); a "
        "window without verdicts has no sample.",
        "window",
    )
    for window, share in kpis.rolling.items():
        _add(rolling, (site, str(window)), _share(share))
    yield rolling

    by_line = _gauge(
        "line_share_within_target_ratio",
        "Share of parcels cleared within the target since start, by line (0-1).",
        "line",
    )
    for line, share in kpis.by_line.items():
        _add(by_line, (site, str(line)), _share(share))
    yield by_line

    yield _clearance_histogram(site, kpis)

    yield _single(
        _gauge(
            "verdicts_pending",
            "Parcels arrived whose clearance verdict is not known yet (neither cleared nor "
            "past the target).",
        ),
        site,
        kpis.pending,
    )
    yield _single(
        _counter(
            "deadline_misses",
            "Decisions that missed the sorter's decision deadline (the parcel took the "
            "default lane).",
        ),
        site,
        kpis.deadline_misses,
    )
    yield _single(
        _counter("recirculations", "Parcels sent round the sorter loop again."),
        site,
        kpis.recirculations,
    )
    yield _single(
        _counter(
            "illegal_transitions",
            "Parcel state changes the lifecycle refused (an event that does not fit the "
            "parcel's state): a bug or a misbehaving PLC to look at.",
        ),
        site,
        kpis.illegal_transitions,
    )


def _clearance_histogram(site: str, kpis: KpiView) -> HistogramMetricFamily:
    """Clearance times as a histogram with bounds at the target and twice it; the bounds
    come from ``target_s`` itself. A target that is no positive finite number leaves only
    the ``+Inf`` bucket (every cleared parcel) rather than unordered bounds."""
    family = HistogramMetricFamily(
        PREFIX + "clearance_seconds",
        "Seconds from arrival to clearance of cleared parcels; buckets at the target and "
        "twice the target.",
        labels=("site",),
    )
    within, twice, beyond = _bucket_counts(kpis)
    total = within + twice + beyond
    target = _number(kpis.target_s)
    buckets: list[tuple[str, float]] = []
    if target is not None and 0 < target < math.inf:
        buckets += [(_le(target), within), (_le(2 * target), within + twice)]
    buckets.append(("+Inf", total))
    family.add_metric([site], buckets, _number(kpis.cleared_s_sum) or 0.0)
    return family


def _floor_families(site: str, view: SiteView) -> Iterator[Metric]:
    """What is open on the floor now: parcels, holds, reviews, alarms."""
    yield _single(
        _gauge("parcels_open", "Parcels tracked and not closed yet, all lines."),
        site,
        view.controller.open_parcels,
    )
    yield _single(
        _gauge("holds", "HAWBs on hold by an officer (their parcels go to inspection)."),
        site,
        view.controller.holds,
    )
    yield _single(
        _gauge("reviews_waiting", "Parcels waiting for an officer's on-screen review."),
        site,
        len(view.reviews),
    )
    yield _single(
        _gauge("alarms_active", "Alarms raised and not cleared, acknowledged or not."),
        site,
        len(view.alarms),
    )
    yield _single(
        _gauge("alarms_unacknowledged", "Active alarms no one has acknowledged yet."),
        site,
        sum(1 for a in view.alarms if not a.acknowledged_by),
    )
    plant = _gauge(
        "plant_figure",
        "The plant's own live figures (the twin's parcels inducted, threats ...), by name; "
        "none at a real site.",
        "figure",
    )
    for name, n in view.plant.items():
        _add(plant, (site, str(name)), n)
    yield plant


def _line_families(site: str, lines: Sequence[LineView]) -> Iterator[Metric]:
    """Per line: parcels by where they are, the PLC's health and its lane status words."""
    on_belt = _gauge("line_parcels_on_belt", "Parcels on the sorter belt, by line.", "line")
    inspection = _gauge(
        "line_parcels_at_inspection", "Parcels at the inspection station, by line.", "line"
    )
    review = _gauge(
        "line_parcels_awaiting_review", "Parcels waiting for an officer's review, by line.", "line"
    )
    link = _gauge(
        "line_link_state",
        "The link to each line's sorter PLC: 1 for the current state, 0 for the others.",
        "line",
        "state",
    )
    packml = _gauge(
        "line_packml_state",
        "The PackML state the line's PLC reports (1 for the current one); absent when the "
        "PLC reports none.",
        "line",
        "state",
    )
    heartbeat = _gauge(
        "line_heartbeat_age_seconds",
        "Seconds since the line PLC's heartbeat last moved; absent without a heartbeat.",
        "line",
    )
    lanes = _gauge(
        "lane_status",
        "Each lane's status word from the PLC: 1 for the current status, 0 for the others; "
        "a lane the PLC does not list is available and has no sample.",
        "line",
        "lane",
        "status",
    )
    for view in lines:
        line = str(view.line)
        _add(on_belt, (site, line), view.on_belt)
        _add(inspection, (site, line), view.at_inspection)
        _add(review, (site, line), view.awaiting_review)
        health = view.health
        _enum(link, (site, line), health.link, _LINK_STATES)
        if health.line_state:
            packml.add_metric([site, line, str(health.line_state)], 1.0)
        _add(heartbeat, (site, line), health.heartbeat_age_s)
        for lane, status in view.lanes.items():
            _enum(lanes, (site, line, str(lane)), _lane_state(status), _LANE_STATES)
    yield from (on_belt, inspection, review, link, packml, heartbeat, lanes)


def _service_families(site: str, view: SiteView) -> Iterator[Metric]:
    """The services around the controller: links, risk results, the local journal."""
    links = _gauge(
        "link_state",
        "The link of each part that has one (sorters, risk feeds, inference, the central "
        "database): 1 for the current state, 0 for the others.",
        "part",
        "state",
    )
    for part, state in view.links.items():
        _enum(links, (site, str(part)), state, _LINK_STATES)
    yield links
    yield _single(
        _gauge("risk_results", "Risk results loaded and held for parcels yet to arrive."),
        site,
        view.risk_results,
    )
    yield _single(
        _counter(
            "risk_results_evicted",
            "Risk results let go at the risk book's bound (risk_book.max_results), oldest "
            "loaded first; a parcel whose result went is inspected.",
        ),
        site,
        view.risk_results_evicted,
    )
    yield _single(
        _counter("journal_rows", "Rows written to the local audit journal."),
        site,
        view.journal_rows,
    )
    yield _single(
        _counter("journal_commits", "Commits (batches) of the local audit journal."),
        site,
        view.journal_commits,
    )


def _forwarder_families(site: str, forwarder: ForwarderView) -> Iterator[Metric]:
    """The central-database forwarder, present only where the site has one."""
    yield _single(
        _gauge(
            "forwarder_connected", "1 while the forwarder reaches the central database, else 0."
        ),
        site,
        forwarder.connected,
    )
    yield _single(
        _gauge(
            "forwarder_error",
            "1 while the forwarder's last cycle ended in an error (see its log), else 0.",
        ),
        site,
        forwarder.last_error is not None,
    )
    yield _single(
        _gauge(
            "forwarder_backlog_rows",
            "Local journal rows not yet confirmed by the central database.",
        ),
        site,
        forwarder.backlog,
    )
    yield _single(
        _counter("forwarder_shipped_rows", "Journal rows shipped to the central database."),
        site,
        forwarder.shipped_total,
    )
    yield _single(
        _gauge(
            "forwarder_watermark",
            "The last local journal row the central database has confirmed (a row id).",
        ),
        site,
        forwarder.watermark,
    )


def _xray_families(site: str, xray: XrayView) -> Iterator[Metric]:
    """The on-site X-ray inference service, present only where the site scores images."""
    state = _gauge(
        "xray_inference_state",
        "The inference service's state (1 for the current one).",
        "state",
    )
    state.add_metric([site, str(xray.state)], 1.0)
    yield state
    yield _single(
        _counter("xray_inference_images", "X-ray images scored by the inference service."),
        site,
        xray.images,
    )
    yield _single(
        _counter(
            "xray_inference_failures",
            "Inference runs that failed (their parcels get an X-ray fault and go to inspection).",
        ),
        site,
        xray.failures,
    )
    yield _single(
        _counter("xray_inference_restarts", "Restarts of the inference session."),
        site,
        xray.restarts,
    )
    yield _single(
        _gauge("xray_inference_last_run_seconds", "Seconds the last inference batch took."),
        site,
        xray.last_run_s,
    )


def _single(family: _Family, site: str, value: object) -> _Family:
    """A family with one sample labelled with the site only."""
    _add(family, (site,), value)
    return family


def _share(share: object) -> float | None:
    """A share within the target, or None (no sample) before the first verdict or when
    the counts are no numbers."""
    if not isinstance(share, Share):
        return None
    hits, misses = _number(share.hits), _number(share.misses)
    if hits is None or misses is None or hits + misses <= 0:
        return None
    return hits / (hits + misses)


def _share_samples(family: CounterMetricFamily, labels: Sequence[str], share: object) -> None:
    """Hits and misses of one :class:`Share` as two ``verdict`` samples."""
    if isinstance(share, Share):
        _add(family, (*labels, "hit"), share.hits)
        _add(family, (*labels, "miss"), share.misses)
