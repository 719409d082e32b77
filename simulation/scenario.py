"""Scenario files: what the twin runs, validated by pydantic and checked for feasibility.

A scenario names a site file (the same file the controller reads, so belt geometry and lanes
are never copied) and adds what only a simulation needs: arrivals, induction limits, scan
tunnel rates, staffing, ground-truth rates, the detector model and injected faults. Unknown
keys are refused; every problem is reported with its path and value in
:class:`controller.app.site.ConfigError` style.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from controller.app.site import SiteConfig, load_config
from controller.core.domain import LaneKind
from controller.core.settings import ConfigError, Policy
from simulation.distributions import Duration, Exponential, Uniform


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- arrivals -------------------------------------------------------------------------------


class Flight(Strict):
    """One flight's parcels, unloaded onto the lines over a window after it lands."""

    id: str = Field(min_length=1)
    at_h: float = Field(ge=0, description="hours after the start of the run")
    parcels: PositiveInt
    unload_min: PositiveFloat = 45.0
    lines: list[str] = Field(default_factory=list, description="empty = every line")


class Steady(Strict):
    """A constant Poisson stream (trucks, feeder traffic, a benchmark)."""

    from_h: float = Field(default=0.0, ge=0)
    to_h: PositiveFloat
    parcels_per_h: PositiveFloat
    lines: list[str] = Field(default_factory=list, description="empty = every line")

    @model_validator(mode="after")
    def _ordered(self) -> Steady:
        if self.to_h <= self.from_h:
            raise ValueError(f"to_h ({self.to_h}) must be after from_h ({self.from_h})")
        return self


class Arrivals(Strict):
    flights: list[Flight] = []
    steady: list[Steady] = []


# --- plant ------------------------------------------------------------------------------


class Induction(Strict):
    """Parcels per hour one induction station can put on its line (a deterministic limit)."""

    max_per_h: PositiveFloat = 18000.0
    per_line: dict[str, PositiveFloat] = {}

    def rate_for(self, line: str) -> float:
        return self.per_line.get(line, self.max_per_h)


class Scan(Strict):
    no_read_rate: float = Field(default=0.01, ge=0, le=1)
    multi_read_rate: float = Field(
        default=0.002, ge=0, le=1, description="two labels read: the PLC reports a no-read"
    )
    xray_latency: Duration = Uniform(dist="uniform", low_s=0.15, high_s=0.6)


class Sorter(Strict):
    missed_divert_rate: float = Field(default=0.003, ge=0, le=1)
    lane_buffer_parcels: PositiveInt = 40
    """Parcels a lane holds before the PLC reports it full (accumulation length)."""
    inspection_lane_buffer_parcels: PositiveInt = 60


class Review(Strict):
    """The on-screen review room: officers see image and declaration while the belt moves."""

    officers: int = Field(default=2, ge=0)
    review_time: Duration = Exponential(dist="exponential", mean=4.0)
    hit_rate: float = Field(default=0.9, ge=0, le=1, description="P(inspect | contraband)")
    false_alarm_rate: float = Field(default=0.05, ge=0, le=1, description="P(inspect | clean)")


class Shift(Strict):
    from_h: float = Field(ge=0)
    to_h: PositiveFloat
    stations: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Shift:
        if self.to_h <= self.from_h:
            raise ValueError(f"to_h ({self.to_h}) must be after from_h ({self.from_h})")
        return self


class Inspection(Strict):
    """Inspection stations, staffed by shift; stations outside every shift are closed."""

    shifts: list[Shift] = Field(default_factory=lambda: [Shift(from_h=0, to_h=24, stations=6)])
    service_time: Duration = Exponential(dist="exponential", mean=90.0)
    referral_rate: float = Field(default=0.01, ge=0, le=1, description="clean but referred")

    def stations_at(self, t_h: float) -> int:
        return sum(s.stations for s in self.shifts if s.from_h <= t_h < s.to_h)


# --- ground truth -------------------------------------------------------------------------


class Goods(Strict):
    share: PositiveFloat
    contains: list[str] = []
    """Detector classes a declared item of this kind shows (a phone shows lithium_battery)."""


def _default_goods() -> dict[str, Goods]:
    return {
        "clothing": Goods(share=0.30),
        "books": Goods(share=0.10),
        "cosmetics": Goods(share=0.12, contains=["liquid_container"]),
        "electronics": Goods(share=0.18, contains=["lithium_battery"]),
        "toys": Goods(share=0.10),
        "shoes": Goods(share=0.10),
        "food supplements": Goods(share=0.10),
    }


class Truth(Strict):
    contraband_rate: float = Field(default=0.004, ge=0, le=1)
    contraband_mix: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {
            "firearm": 0.05,
            "blade": 0.25,
            "narcotics_organic": 0.5,
            "lithium_battery": 0.2,
        }
    )
    """Hidden contraband classes and their weights; a class the detector does not score is
    invisible on the X-ray (counterfeits, for instance)."""
    goods: dict[str, Goods] = Field(default_factory=_default_goods)

    @model_validator(mode="after")
    def _not_empty(self) -> Truth:
        if self.contraband_rate > 0 and not self.contraband_mix:
            raise ValueError("contraband_rate > 0 needs at least one class in contraband_mix")
        if not self.goods:
            raise ValueError("goods needs at least one entry")
        return self


class Manifest(Strict):
    """The customs risk result from advance data, with a tunable link to the hidden truth.

    A latent z = correlation·T̃ + sqrt(1 - correlation²)·ε, where T̃ is the standardised
    contraband indicator and ε ~ N(0, 1), so z correlates with the truth by exactly
    ``correlation``. Channels cut z at the quantiles that give ``red_rate`` and
    ``yellow_rate`` overall; score = Φ(z - score_offset).
    """

    coverage: float = Field(default=0.99, ge=0, le=1, description="share with a risk result")
    correlation: float = Field(default=0.3, ge=0, lt=1)
    red_rate: float = Field(default=0.01, ge=0, lt=1)
    yellow_rate: float = Field(default=0.06, ge=0, lt=1)
    score_offset: float = 3.0

    @model_validator(mode="after")
    def _rates(self) -> Manifest:
        if self.red_rate + self.yellow_rate >= 1:
            raise ValueError(
                f"red_rate + yellow_rate is {self.red_rate + self.yellow_rate}; must be < 1"
            )
        return self


class Beta(Strict):
    a: PositiveFloat
    b: PositiveFloat


class DetectorClass(Strict):
    """Score distributions of one class: when the object is present and when it is not."""

    present: Beta
    absent: Beta = Beta(a=0.6, b=40.0)


def _default_detector() -> dict[str, DetectorClass]:
    return {
        "firearm": DetectorClass(present=Beta(a=8, b=1.5)),
        "blade": DetectorClass(present=Beta(a=5, b=2)),
        "lithium_battery": DetectorClass(present=Beta(a=6, b=2)),
        "liquid_container": DetectorClass(present=Beta(a=5, b=2)),
        "narcotics_organic": DetectorClass(present=Beta(a=3, b=2.5)),
    }


class Detector(Strict):
    """The on-site X-ray model as score distributions per class (no images in the fast path)."""

    classes: dict[str, DetectorClass] = Field(default_factory=_default_detector)
    model_version: str = "twin-detector"


# --- faults ---------------------------------------------------------------------------------


class NoReadBurst(Strict):
    type: Literal["no_read_burst"]
    line: str
    at_h: float = Field(ge=0)
    duration_min: PositiveFloat
    rate: float = Field(default=1.0, ge=0, le=1)


class LaneFull(Strict):
    type: Literal["lane_full"]
    line: str
    lane: int
    at_h: float = Field(ge=0)
    duration_min: PositiveFloat


class LateXray(Strict):
    type: Literal["late_xray"]
    line: str
    at_h: float = Field(ge=0)
    duration_min: PositiveFloat
    latency_s: PositiveFloat = 30.0


Fault = Annotated[NoReadBurst | LaneFull | LateXray, Field(discriminator="type")]


class Scenario(Strict):
    name: str = Field(min_length=1)
    site: Path
    """Site file, relative to the scenario file."""
    seed: int = Field(default=1, ge=0)  # numpy seeds are non-negative
    horizon_h: PositiveFloat = 24.0
    drain_h: float = Field(default=2.0, ge=0)
    """Extra time after the last arrival for parcels in flight to close."""
    allow_overload: bool = False
    """Run even when arrivals exceed induction capacity, showing the growing queue."""
    sample_every_s: PositiveFloat = 60.0
    arrivals: Arrivals
    induction: Induction = Induction()
    scan: Scan = Scan()
    sorter: Sorter = Sorter()
    review: Review = Review()
    inspection: Inspection = Inspection()
    truth: Truth = Truth()
    manifest: Manifest = Manifest()
    detector: Detector = Detector()
    policy: dict[str, Any] = {}
    """What-if overrides of the site's policy section (thresholds, audit rate, …)."""
    faults: list[Fault] = []

    @model_validator(mode="after")
    def _some_arrivals(self) -> Scenario:
        if not self.arrivals.flights and not self.arrivals.steady:
            raise ValueError("arrivals needs at least one flight or steady stream")
        return self


class ScenarioBundle(BaseModel):
    """A validated scenario with its site config (policy overrides applied)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    scenario: Scenario
    site: SiteConfig
    source: str


def load_scenario(path: Path, **overrides: Any) -> ScenarioBundle:
    """Read, validate and cross-check a scenario file; raise ConfigError listing every problem.

    ``overrides`` replace top-level keys (deep-merged for mappings), as a sweep does.
    """
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [("(file)", source, exc.strerror or str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise ConfigError(source, [(where, "-", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [("(document)", repr(raw)[:60], "must be a mapping")])
    raw = deep_merge(raw, overrides)
    return parse_scenario(raw, base_dir=path.parent, source=source)


def parse_scenario(raw: dict[str, Any], base_dir: Path, source: str) -> ScenarioBundle:
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    site_path = scenario.site if scenario.site.is_absolute() else base_dir / scenario.site
    try:
        site = load_config(site_path)
    except ConfigError as exc:
        problems = [(f"site -> {path}", value, msg) for path, value, msg in exc.problems]
        raise ConfigError(source, problems) from None
    site = _with_policy(site, scenario.policy, source)
    problems = cross_check(scenario, site)
    if problems:
        raise ConfigError(source, problems)
    return ScenarioBundle(scenario=scenario, site=site, source=source)


def _with_policy(site: SiteConfig, overrides: dict[str, Any], source: str) -> SiteConfig:
    if not overrides:
        return site
    merged = deep_merge(site.policy.model_dump(mode="json"), overrides)
    try:
        policy = Policy.model_validate(merged)
    except ValidationError as exc:
        problems = [(f"policy.{path}", value, msg) for path, value, msg in _problems(exc)]
        raise ConfigError(source, problems) from None
    return site.model_copy(update={"policy": policy})


def cross_check(scenario: Scenario, site: SiteConfig) -> list[tuple[str, str, str]]:
    """Problems only visible with the site at hand: unknown lines and lanes, classes the
    policy relies on that the detector does not score, and infeasible arrival rates."""
    problems: list[tuple[str, str, str]] = []
    lines = {line.id: line for line in site.lines}
    known = ", ".join(lines)

    def check_lines(where: str, names: list[str]) -> None:
        for i, name in enumerate(names):
            if name not in lines:
                problems.append((f"{where}.{i}", repr(name), f"no such line; the site has {known}"))

    for i, flight in enumerate(scenario.arrivals.flights):
        check_lines(f"arrivals.flights.{i}.lines", flight.lines)
    for i, stream in enumerate(scenario.arrivals.steady):
        check_lines(f"arrivals.steady.{i}.lines", stream.lines)
    for name in scenario.induction.per_line:
        if name not in lines:
            problems.append((f"induction.per_line.{name}", repr(name), f"no such line ({known})"))
    for i, fault in enumerate(scenario.faults):
        if fault.line not in lines:
            problems.append((f"faults.{i}.line", repr(fault.line), f"no such line ({known})"))
        elif isinstance(fault, LaneFull) and fault.lane not in {
            lane.id for lane in lines[fault.line].lanes
        }:
            problems.append((f"faults.{i}.lane", repr(fault.lane), "no such lane on that line"))
    for name in site.policy.classes:
        if name not in scenario.detector.classes:
            problems.append(
                (
                    f"detector.classes.{name}",
                    "(missing)",
                    "the site policy relies on this class but the detector model does not "
                    "score it (every parcel would be inspected as XRAY_FAILED)",
                )
            )
    for goods, item in scenario.truth.goods.items():
        for name in item.contains:
            if name not in scenario.detector.classes:
                problems.append(
                    (f"truth.goods.{goods}.contains", repr(name), "not a detector class")
                )
    for line in site.lines:
        if not line.lanes_of(LaneKind.RELEASE):
            problems.append((f"site -> lines.{line.id}.lanes", "-", "no release lane"))
    if not scenario.allow_overload and not problems:
        problems += overload_problems(scenario, site)
    return problems


def peak_load_per_h(scenario: Scenario, site: SiteConfig) -> dict[str, float]:
    """The highest arrival rate each line sees (parcels/h), taken over 15-minute buckets."""
    bucket_h = 0.25
    horizon = max(
        [f.at_h + f.unload_min / 60 for f in scenario.arrivals.flights]
        + [s.to_h for s in scenario.arrivals.steady]
    )
    buckets = math.ceil(horizon / bucket_h) + 1
    ids = [line.id for line in site.lines]
    load = {line: [0.0] * buckets for line in ids}
    for flight in scenario.arrivals.flights:
        targets = flight.lines or ids
        per_h = flight.parcels / (flight.unload_min / 60) / len(targets)
        _spread(load, targets, flight.at_h, flight.at_h + flight.unload_min / 60, per_h, bucket_h)
    for stream in scenario.arrivals.steady:
        targets = stream.lines or ids
        per_h = stream.parcels_per_h / len(targets)
        _spread(load, targets, stream.from_h, stream.to_h, per_h, bucket_h)
    return {line: max(rates) for line, rates in load.items()}


def _spread(
    load: dict[str, list[float]],
    lines: list[str],
    start_h: float,
    end_h: float,
    per_h: float,
    bucket_h: float,
) -> None:
    for i in range(len(next(iter(load.values())))):
        lo, hi = i * bucket_h, (i + 1) * bucket_h
        overlap = max(0.0, min(hi, end_h) - max(lo, start_h))
        if overlap > 0:
            for line in lines:
                load[line][i] += per_h * overlap / bucket_h


def overload_problems(scenario: Scenario, site: SiteConfig) -> list[tuple[str, str, str]]:
    problems = []
    for line, peak in peak_load_per_h(scenario, site).items():
        limit = scenario.induction.rate_for(line)
        if peak > limit:
            problems.append(
                (
                    "arrivals",
                    f"{peak:,.0f} parcels/h on line {line}",
                    f"above its induction capacity of {limit:,.0f}/h (induction); the queue "
                    "before induction would grow without bound. Lower the rate, raise "
                    "induction.max_per_h, or set allow_overload: true to run and watch it grow",
                )
            )
    return problems


def deep_merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``updates`` applied; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _problems(exc: ValidationError) -> list[tuple[str, str, str]]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(document)"
        value = err.get("input")
        shown = "-" if isinstance(value, dict | list) else repr(value)
        problems.append((loc, shown, err["msg"].removeprefix("Value error, ")))
    return problems
