"""The site file: one YAML document, validated by pydantic at start-up.

The core's settings (:mod:`controller.core.settings`) extended with the adapters a site names.
:class:`SiteConfig` is the static shape (what the code reads); the schema a file is validated
against is built from the adapter registry (:func:`site_schema`): each adapter slot
(``lines[*].sorter``, ``risk_feeds[*]``, ``xray``, ``intake.sources[*]``, ``review``,
``plant``) is a discriminated union, on ``type``, of the settings models registered for its
kind. An integrator adds an adapter by registering it (:mod:`controller.app.registry`); this
module never changes for it.

Unknown keys are refused, so a typo fails at load with its path. A relative path is taken
from the site file's folder (:mod:`controller.app.preflight`, which also checks what the
paths and environment variables name on this machine).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union, cast

import sqlalchemy
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    create_model,
    field_validator,
    model_validator,
)

from controller.app.command_channel import CommandChannelSettings
from controller.app.preflight import absolute_paths, with_absolute_paths
from controller.app.registry import Kind, Registry, default_registry, type_of
from controller.console.settings import ConsoleSettings
from controller.core.settings import WRITTEN, ConfigError, Line, SiteCore, Strict, validate
from controller.events.settings import MqttEventsSettings
from controller.intake.settings import Intake
from controller.scada.settings import ScadaSettings


class Store(Strict):
    journal_path: Annotated[Path, WRITTEN] = Path("var/journal.sqlite")
    group_commit_ms: float = Field(default=2.0, ge=0, le=1000)
    central_url: str | None = None
    """The central database the journal is forwarded to: PostgreSQL
    (``postgresql+psycopg://user@host/db``), or a SQLite file on a test bench."""
    forward_interval_s: PositiveFloat = 1.0
    forward_batch: int = Field(default=1000, ge=1)
    recovery_horizon_h: PositiveFloat = 24.0
    """At start-up, parcels left open in the journal this recently are taken back."""

    @field_validator("central_url")
    @classmethod
    def _a_postgresql_url(cls, url: str | None) -> str | None:
        """Caught by ``config check``, not by the forwarder's first connection."""
        if url is None:
            return None
        try:
            parsed = sqlalchemy.make_url(url)
        except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port not a number
            raise ValueError(
                "not a database URL: expected postgresql+psycopg://user@host:5432/database"
            ) from None
        if parsed.port is not None and not 1 <= parsed.port <= 65535:
            raise ValueError(f"port {parsed.port} is not a TCP port (1-65535)")
        backend = parsed.get_backend_name()
        if backend not in ("postgresql", "sqlite"):
            raise ValueError(
                f"the central database is PostgreSQL (or a SQLite file), not {backend!r}"
            )
        if backend == "postgresql" and not (parsed.host and parsed.database):
            raise ValueError("name the host and the database: postgresql+psycopg://user@host/db")
        if backend == "sqlite" and not parsed.database:
            raise ValueError("name the file: sqlite:///path/to/central.sqlite")
        return url


class _StaticOnly(Strict):
    """Refuses direct validation: the real schema comes from :func:`site_schema`."""

    @model_validator(mode="before")
    @classmethod
    def _use_the_registry(cls, data: Any) -> Any:
        if cls in _STATIC:
            raise TypeError(
                f"{cls.__name__} is the static shape of a site file; validate with "
                "controller.app.site.parse_config (its schema is built from the adapter registry)"
            )
        return data


class SiteLine(Line, _StaticOnly):
    """A line as the site file describes it: the core's line plus its sorter adapter."""

    sorter: BaseModel
    """A registered ``sorter`` adapter's settings (default: the registry's default type)."""


class RiskBookSettings(Strict):
    max_results: int = Field(default=2_000_000, ge=1)
    """Risk results held at most (about 50 bytes each: 2,000,000 is ~100 MB, a day at
    80,000 parcels/h). Past it the results loaded longest ago go first; a parcel whose result
    went looks up none and is inspected (fail secure), so keep it well above the parcels
    expected between a manifest's loading and the scan of its last parcel."""


class SiteConfig(SiteCore, _StaticOnly):
    """A validated site file. Adapter slots hold the registered settings models."""

    lines: Sequence[SiteLine] = Field(min_length=1)
    store: Store = Store()
    commands: CommandChannelSettings = CommandChannelSettings()
    """The local channel operators' and officers' commands arrive on (``cargogate hold``...)."""
    console: ConsoleSettings = ConsoleSettings()
    """The web console and HTTP API (on by default)."""
    scada: ScadaSettings = ScadaSettings()
    """The read-only OPC UA server SCADA and historians read (off by default; docs/scada.md)."""
    risk_feeds: list[BaseModel] = Field(default_factory=list)
    risk_book: RiskBookSettings = RiskBookSettings()
    """Where the feeds' results are held, and how many at most."""
    events: MqttEventsSettings | None = None
    """The MQTT broker the site's events are published to (docs/events.md); none when
    absent."""
    xray: BaseModel
    intake: Intake | None = None
    review: BaseModel
    plant: BaseModel | None = None

    def adapter_slots(self) -> list[tuple[str, Kind, BaseModel]]:
        """Every adapter this site names: (path in the file, kind, settings)."""
        slots = [
            (f"lines.{i}.sorter", Kind.SORTER, line.sorter) for i, line in enumerate(self.lines)
        ]
        slots += [(f"risk_feeds.{i}", Kind.RISK_FEED, f) for i, f in enumerate(self.risk_feeds)]
        slots += [("xray", Kind.XRAY, self.xray), ("review", Kind.REVIEW, self.review)]
        if self.intake is not None:
            slots += [
                (f"intake.sources.{i}", Kind.IMAGE_SOURCE, s)
                for i, s in enumerate(self.intake.sources)
            ]
        if self.plant is not None:
            slots.append(("plant", Kind.PLANT, self.plant))
        return slots


_STATIC = (SiteLine, SiteConfig)
M = TypeVar("M", bound=BaseModel)


class _NoneRegistered(BaseModel):
    """The slot of a kind nobody registered: every value is refused at its ``type``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["(no adapter of this kind is registered)"]


def _union(registry: Registry, kind: Kind) -> Any:
    """The discriminated union of the settings models registered for ``kind``."""
    models = [adapter.settings for adapter in registry.adapters(kind)]
    if not models:
        return _NoneRegistered
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def _default(registry: Registry, kind: Kind) -> Any:
    """The slot's default settings (the default type's model, if it needs no other value),
    or ``...`` (required)."""
    type_key = registry.default(kind)
    if type_key is None:
        return ...
    model: type[BaseModel] = registry.adapter(kind, type_key).settings
    if any(f.is_required() for f in model.model_fields.values()):
        return ...
    return model()


@functools.cache
def site_schema(registry: Registry | None = None) -> type[SiteConfig]:
    """The site-file schema for ``registry`` (default: every installed plugin), built once."""
    registry = registry or default_registry()
    line = _subclass(
        SiteLine, sorter=(_union(registry, Kind.SORTER), _default(registry, Kind.SORTER))
    )
    intake = _subclass(
        Intake, sources=(_generic(list, _union(registry, Kind.IMAGE_SOURCE)), Field(min_length=1))
    )
    return _subclass(
        SiteConfig,
        lines=(_generic(Sequence, line), Field(min_length=1)),
        risk_feeds=(
            _generic(list, _union(registry, Kind.RISK_FEED)),
            Field(default_factory=list),
        ),
        xray=(_union(registry, Kind.XRAY), _default(registry, Kind.XRAY)),
        intake=(Optional[intake], None),  # noqa: UP045
        review=(_union(registry, Kind.REVIEW), _default(registry, Kind.REVIEW)),
        plant=(Optional[_union(registry, Kind.PLANT)], None),  # noqa: UP045
    )


def _generic(origin: Any, argument: Any) -> Any:
    """``origin[argument]`` for an argument only known at run time."""
    return origin[argument]


def _subclass(base: type[M], **fields: Any) -> type[M]:
    """``base`` with ``fields`` replaced (pydantic's ``create_model``, typed)."""
    return cast(type[M], create_model(base.__name__, __base__=base, __module__=__name__, **fields))


def load_config(path: Path, registry: Registry | None = None) -> SiteConfig:
    """Read and validate a site file, its relative paths taken from its folder; raise
    :class:`ConfigError` listing every problem."""
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
    folder = path.absolute().parent.resolve()
    return parse_config(raw, source=str(path), registry=registry, folder=folder)


def parse_config(
    raw: dict[str, object],
    source: str = "<config>",
    registry: Registry | None = None,
    folder: Path | None = None,
) -> SiteConfig:
    """Validate a site document against the registry's schema; then check that every adapter
    has the sections it needs. Problems carry the path as the file spells it. With ``folder``
    (the site file's), relative paths are taken from it; without, they stay as given."""
    registry = registry or default_registry()
    schema = site_schema(registry)
    document = with_default_types(raw, registry)
    if folder is not None:
        document = absolute_paths(schema, document, folder)
    config = validate(schema, document, source)
    problems = missing_sections(config, registry)
    if problems:
        raise ConfigError(source, problems)
    return config if folder is None else with_absolute_paths(config, folder)


def with_default_types(raw: dict[str, object], registry: Registry) -> dict[str, object]:
    """``raw`` with the default ``type`` written into adapter slots that give none, so a
    problem inside such a slot is reported at its path in the file (not under its tag)."""

    def filled(node: object, kind: Kind) -> object:
        default = registry.default(kind)
        if isinstance(node, dict) and "type" not in node and default is not None:
            return {"type": default, **node}
        return node

    def each(nodes: object, kind: Kind) -> object:
        return [filled(n, kind) for n in nodes] if isinstance(nodes, list) else nodes

    out = dict(raw)
    for key, kind in (("xray", Kind.XRAY), ("review", Kind.REVIEW), ("plant", Kind.PLANT)):
        if key in out:
            out[key] = filled(out[key], kind)
    if "risk_feeds" in out:
        out["risk_feeds"] = each(out["risk_feeds"], Kind.RISK_FEED)
    lines = out.get("lines")
    if isinstance(lines, list):
        out["lines"] = [
            {**line, "sorter": filled(line["sorter"], Kind.SORTER)}
            if isinstance(line, dict) and "sorter" in line
            else line
            for line in lines
        ]
    intake = out.get("intake")
    if isinstance(intake, dict) and "sources" in intake:
        out["intake"] = {**intake, "sources": each(intake["sources"], Kind.IMAGE_SOURCE)}
    return out


def missing_sections(config: SiteConfig, registry: Registry) -> list[tuple[str, str, str]]:
    """(path, value, problem) for every adapter whose registration ``needs`` a site-file
    section that this site leaves out."""
    problems = []
    for where, kind, settings in config.adapter_slots():
        adapter = registry.adapter(kind, type_of(settings))
        for section, why in adapter.needs.items():
            if getattr(config, section, None) is None:
                problems.append(
                    (
                        f"{where}.type",
                        repr(adapter.type),
                        f"needs the site's {section!r} section ({why}), but there is none",
                    )
                )
    return problems
