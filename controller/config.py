"""The site file: one YAML document, validated by pydantic at start-up.

Unknown keys are refused, so a typo fails at load with its path. Adapters are chosen by their
``type`` field (a discriminated union); an integrator adds an adapter by adding its settings
model to the matching union here and its factory to :mod:`controller.assembly`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from controller.domain import LaneKind
from controller.inference.settings import OnnxXray
from controller.intake.settings import Intake
from plc_adapters.settings import ModbusSorter, OpcUaSorter
from simulation.settings import TwinPlant


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteInfo(Strict):
    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = ""


class Belt(Strict):
    """Belt geometry; the decision deadline is scan_to_divert_m / speed_m_s - plc_margin_s."""

    speed_m_s: PositiveFloat = 2.0
    induct_to_scan_m: float = Field(default=10.0, ge=0)
    scan_to_divert_m: PositiveFloat = 12.0
    plc_margin_s: float = Field(default=0.5, ge=0)
    loop_s: PositiveFloat = 60.0

    @property
    def decision_window_s(self) -> float:
        return self.scan_to_divert_m / self.speed_m_s - self.plc_margin_s

    @property
    def induct_to_scan_s(self) -> float:
        return self.induct_to_scan_m / self.speed_m_s

    @model_validator(mode="after")
    def _window_positive(self) -> Belt:
        if self.decision_window_s <= 0:
            raise ValueError(
                f"decision window is {self.decision_window_s:.3f} s "
                f"(scan_to_divert_m {self.scan_to_divert_m} / speed_m_s {self.speed_m_s} "
                f"- plc_margin_s {self.plc_margin_s}); it must be > 0"
            )
        return self


class Lane(Strict):
    id: int = Field(ge=1, le=65535)
    kind: LaneKind
    capacity_per_h: int = Field(default=6000, ge=1)


class InProcessSorter(Strict):
    """The sorter is played in this process (plant stand-in, twin, tests)."""

    type: Literal["inprocess"] = "inprocess"


SorterSettings = Annotated[
    InProcessSorter | OpcUaSorter | ModbusSorter, Field(discriminator="type")
]


class Line(Strict):
    id: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    belt: Belt = Belt()
    lap_limit: int = Field(default=3, ge=1)
    reply_budget_s: float = Field(default=0.05, ge=0)
    """Time kept back from each deadline for the journal commit and the reply write."""
    lanes: list[Lane] = Field(min_length=1)
    sorter: SorterSettings = InProcessSorter()

    @model_validator(mode="after")
    def _lanes_sane(self) -> Line:
        ids = [lane.id for lane in self.lanes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"lane ids must be unique on a line; repeated: {duplicates}")
        if self.reply_budget_s >= self.belt.decision_window_s:
            raise ValueError(
                f"reply_budget_s {self.reply_budget_s} leaves no time to decide in a "
                f"{self.belt.decision_window_s:.2f} s decision window"
            )
        kinds = {lane.kind for lane in self.lanes}
        for needed in (LaneKind.INSPECTION, LaneKind.EXCEPTION):
            if needed not in kinds:
                raise ValueError(f"a line needs at least one {needed.value} lane")
        return self

    def lanes_of(self, kind: LaneKind) -> list[Lane]:
        return [lane for lane in self.lanes if lane.kind == kind]


class XrayClass(Strict):
    """Thresholds for one class the X-ray model scores.

    score >= alarm → inspection; clear <= score < alarm → ambiguous (an officer may review);
    score < clear → clean. ``permitted_by`` lists declared-goods words that make a detection
    expected (a battery in declared electronics), so it is not a declaration mismatch.
    """

    alarm: float = Field(gt=0, le=1)
    clear: float = Field(ge=0, lt=1)
    permitted_by: list[str] = []

    @model_validator(mode="after")
    def _ordered(self) -> XrayClass:
        if self.clear > self.alarm:
            raise ValueError(f"clear ({self.clear}) must not exceed alarm ({self.alarm})")
        return self


def _default_classes() -> dict[str, XrayClass]:
    return {
        "firearm": XrayClass(alarm=0.30, clear=0.05),
        "blade": XrayClass(alarm=0.35, clear=0.08),
        "lithium_battery": XrayClass(
            alarm=0.60, clear=0.20, permitted_by=["electronics", "phone", "laptop", "battery"]
        ),
        "liquid_container": XrayClass(
            alarm=0.60, clear=0.20, permitted_by=["cosmetics", "liquid", "beverage", "perfume"]
        ),
        "narcotics_organic": XrayClass(alarm=0.40, clear=0.10),
    }


class Policy(Strict):
    """Decision thresholds. Release needs positive evidence; everything else is inspected."""

    release_max_score: float = Field(default=0.30, ge=0, le=1)
    audit_rate: float = Field(default=0.03, ge=0, le=1)
    min_audit_rate: float = Field(default=0.01, ge=0, le=1)
    seed: int = 20261122
    review_yellow: bool = True
    review_ambiguous_xray: bool = True
    classes: dict[str, XrayClass] = Field(default_factory=_default_classes)

    @model_validator(mode="after")
    def _audit_floor(self) -> Policy:
        if self.audit_rate < self.min_audit_rate:
            raise ValueError(
                f"audit_rate {self.audit_rate} is below min_audit_rate {self.min_audit_rate}"
            )
        return self


class Clearance(Strict):
    target_s: PositiveFloat = 150.0
    windows_s: list[PositiveFloat] = [300.0, 900.0, 3600.0]


class Store(Strict):
    journal_path: Path = Path("var/journal.sqlite")
    group_commit_ms: float = Field(default=2.0, ge=0, le=1000)
    central_url: str | None = None
    forward_interval_s: PositiveFloat = 1.0
    forward_batch: int = Field(default=1000, ge=1)
    recovery_horizon_h: PositiveFloat = 24.0
    """At start-up, parcels left open in the journal this recently are taken back."""


class FileRiskFeed(Strict):
    type: Literal["file"]
    path: Path
    poll_s: PositiveFloat = 5.0


class HttpRiskFeed(Strict):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    poll_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 5.0


RiskFeedSettings = Annotated[FileRiskFeed | HttpRiskFeed, Field(discriminator="type")]


class NoXray(Strict):
    """No on-site inference: every parcel has XRAY_MISSING and goes to inspection."""

    type: Literal["none"] = "none"


class PlantXray(Strict):
    """X-ray scores come from the plant model's detector (the digital twin; demos)."""

    type: Literal["plant"]


XraySettings = Annotated[NoXray | PlantXray | OnnxXray, Field(discriminator="type")]


class NoReview(Strict):
    """No on-screen review room: parcels that would need a review go to inspection."""

    type: Literal["none"] = "none"


class PlantReview(Strict):
    """The plant model's officers review on screen (the digital twin; demos)."""

    type: Literal["plant"]


ReviewSettings = Annotated[NoReview | PlantReview, Field(discriminator="type")]


class SiteConfig(Strict):
    site: SiteInfo
    lines: list[Line] = Field(min_length=1)
    policy: Policy = Policy()
    clearance: Clearance = Clearance()
    store: Store = Store()
    risk_feeds: list[RiskFeedSettings] = []
    xray: XraySettings = NoXray()
    intake: Intake | None = None
    review: ReviewSettings = NoReview()
    plant: TwinPlant | None = None

    @model_validator(mode="after")
    def _lines_unique(self) -> SiteConfig:
        ids = [line.id for line in self.lines]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"line ids must be unique; repeated: {repeated}")
        return self

    @model_validator(mode="after")
    def _onnx_needs_intake(self) -> SiteConfig:
        if self.xray.type == "onnx" and self.intake is None:
            raise ValueError(
                "xray.type 'onnx' scores scanner images, but there is no 'intake' section "
                "saying where the images come from"
            )
        return self

    @model_validator(mode="after")
    def _plant_ports_need_a_plant(self) -> SiteConfig:
        users = [name for name in ("xray", "review") if getattr(self, name).type == "plant"]
        if users and self.plant is None:
            raise ValueError(
                f"{' and '.join(users)} of type 'plant' come from the plant model, but no "
                "'plant' section is configured"
            )
        return self


class ConfigError(Exception):
    """The site file is unreadable or invalid; ``problems`` lists (path, value, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s)"]
        lines += [f"  {path}: {msg} (got {value})" for path, value, msg in problems]
        super().__init__("\n".join(lines))


def load_config(path: Path) -> SiteConfig:
    """Read and validate a site file; raise :class:`ConfigError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", str(path), exc.strerror or str(exc))]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise ConfigError(str(path), [(where, "-", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("(document)", repr(raw)[:60], "must be a mapping")])
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, object], source: str = "<config>") -> SiteConfig:
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in file_path(raw, err["loc"])) or "(document)"
            value = err.get("input")
            shown = "-" if isinstance(value, dict | list) else repr(value)
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((loc, shown, msg))
        raise ConfigError(source, problems) from None


def file_path(raw: object, loc: tuple[int | str, ...]) -> list[int | str]:
    """``loc`` as the file spells it: pydantic puts an adapter's ``type`` tag into the path
    (``lines.0.sorter.modbus.unit_id``), which is not a key in the file, so drop it."""
    path: list[int | str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return path
