"""The core's own settings: belt geometry, lanes, line timing, the decision policy and the
clearance target, plus the error every settings loader raises.

Only the standard library and pydantic: the application layer extends these models with the
adapters a site names (:mod:`controller.app.site`). Unknown keys are refused, so a typo fails
at load with its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from controller.core.domain import LaneKind


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Written:
    def __repr__(self) -> str:
        return "WRITTEN"


WRITTEN: Final = _Written()
"""Marks a path setting the controller makes and writes (its journal, its socket, a folder it
files images into): ``Annotated[Path, WRITTEN]``. It need not exist, but must be creatable.
Every other path setting names something the controller reads, which must exist. Either way a
relative path in a site file is taken from the site file's folder."""


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


class Line(Strict):
    id: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    belt: Belt = Belt()
    lap_limit: int = Field(default=3, ge=1)
    reply_budget_s: float = Field(default=0.05, ge=0)
    """Time kept back from each deadline for the journal commit and the reply write."""
    confirm_timeout_s: PositiveFloat | None = None
    """Seconds a parcel on the belt may go without news from the PLC (its divert
    confirmation, or its next lap's request) before it closes as lost tracking. Counted only
    while the PLC link is up and the line runs. Default: two loops of the belt
    (2 × ``belt.loop_s``, 120 s with the default belt); it must exceed one loop (and the
    ride to the first divert, if that is longer)."""
    journal_backlog_max: int = Field(default=1_000_000, ge=1)
    """Journal entries the line keeps in memory while the journal refuses writes. At the
    cap the line takes no further telegram (the PLC's mailbox holds them) until the journal
    takes some; other entries beyond it are logged in full, counted, and an alarm says how
    many."""
    lanes: list[Lane] = Field(min_length=1)

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
        longest = self._longest_silence_s
        if self.confirm_timeout_s is not None and self.confirm_timeout_s <= longest:
            raise ValueError(
                f"confirm_timeout_s {self.confirm_timeout_s} must exceed one loop of the belt "
                f"and the ride to the first divert ({longest:g} s): every parcel bound for a "
                "far lane or recirculating would close as lost tracking"
            )
        return self

    @property
    def confirm_timeout(self) -> float:
        """``confirm_timeout_s``, or its default: twice the longest a parcel normally goes
        without news from the PLC (one loop of the belt, or the ride to the first divert if
        that is longer)."""
        return self.confirm_timeout_s or 2 * self._longest_silence_s

    @property
    def _longest_silence_s(self) -> float:
        """The longest a parcel on the belt normally goes without a telegram: a divert point
        is at most one loop from the scanner, and a recirculating parcel is back within one."""
        return max(self.belt.loop_s, self.belt.scan_to_divert_m / self.belt.speed_m_s)

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


class SiteCore(Strict):
    """What the core needs of a site: its lines, the policy and the clearance target."""

    site: SiteInfo
    lines: Sequence[Line] = Field(min_length=1)
    policy: Policy = Policy()
    clearance: Clearance = Clearance()

    @model_validator(mode="after")
    def _lines_unique(self) -> SiteCore:
        ids = [line.id for line in self.lines]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"line ids must be unique; repeated: {repeated}")
        return self


class ConfigError(Exception):
    """The site file is unreadable or invalid; ``problems`` lists (path, value, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s)"]
        lines += [f"  {path}: {msg} (got {value})" for path, value, msg in problems]
        super().__init__("\n".join(lines))


Model = TypeVar("Model", bound=BaseModel)


def validate(model: type[Model], raw: dict[str, object], source: str = "<config>") -> Model:
    """Validate ``raw`` as ``model``; raise :class:`ConfigError` listing every problem with
    its path as the file spells it, the value found and what was expected."""
    try:
        return model.model_validate(raw)
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
