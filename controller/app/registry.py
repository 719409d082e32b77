"""The adapter registry: which ``type`` key of which site-file section builds which adapter.

Every adapter package registers in one module of its own (``<package>/registration.py``) plain
data that imports nothing of CargoGate's application layer: ``ADAPTERS``, one mapping per
adapter (its kind, ``type`` key, settings model, factory and the sections it needs), and
``COMMANDS``, the ``cargogate`` sub-commands it brings. An entry point of the group
``cargogate.adapters`` names that module; CargoGate's own are declared in ``pyproject.toml``
exactly as a third party declares its own, so ours load the same way theirs do::

    # acme_sorter/registration.py
    from acme_sorter.settings import AcmeSorter

    ADAPTERS = [
        {"kind": "sorter", "type": "acme", "settings": AcmeSorter,
         "factory": "acme_sorter.factory:sorter"},
    ]

    # acme_sorter's pyproject.toml
    [project.entry-points."cargogate.adapters"]
    acme = "acme_sorter.registration"

The site schema (:func:`controller.app.site.site_schema`) is built from the registered
settings models, and the composition root (:mod:`controller.app.parts`) builds each adapter
through its factory. Factories are named ``"module:function"`` and imported only when an
adapter of that type is built, so validating a site file never loads asyncua, pymodbus,
onnxruntime, pydicom or SimPy: :func:`resolve` is the one place that imports them, lazily.
(A :class:`Plugin` object is accepted too, for code that registers without an entry point.)
"""

from __future__ import annotations

import functools
import importlib
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

GROUP = "cargogate.adapters"
"""The entry-point group every plugin (ours included) is declared in."""


class Kind(StrEnum):
    """The adapter kinds, each with the site-file slot it fills and its factory's call.

    Every factory is called as ``factory(settings, ctx)`` with the validated settings model and
    a context object; it reads only what it needs from ``ctx`` (see
    :class:`controller.app.parts.BuildContext`, and for image sources
    :class:`controller.intake.factory.SourceContext`). What it returns:

    * ``sorter`` (``lines[*].sorter``): a :class:`controller.core.ports.SorterPort`.
    * ``risk_feed`` (``risk_feeds[*]``): a :class:`controller.risk.feeds.RiskFeed`; its
      settings' ``poll_s`` (if any) sets how often it is fetched.
    * ``xray`` (``xray``): a :class:`controller.core.ports.XrayPort`.
    * ``image_source`` (``intake.sources[*]``): an object with ``async run()``.
    * ``review`` (``review``): a :class:`controller.core.ports.ReviewQueue`, or None for none.
    * ``plant`` (``plant``): a :class:`controller.app.parts.Plant` (what plays the hub).

    An adapter that is an async context manager is entered when the services start and exited
    when they stop; one that has ``link_state`` shows in the live view's links.
    """

    SORTER = "sorter"
    RISK_FEED = "risk_feed"
    XRAY = "xray"
    IMAGE_SOURCE = "image_source"
    REVIEW = "review"
    PLANT = "plant"


REQUIRED_ATTRIBUTES: Mapping[Kind, tuple[str, ...]] = {
    Kind.SORTER: ("line", "telegrams", "reply", "lane_status"),
    Kind.RISK_FEED: ("fetch",),
    Kind.XRAY: ("analyse",),
    Kind.IMAGE_SOURCE: ("run",),
    Kind.REVIEW: ("review",),
    Kind.PLANT: ("clock", "connect", "play", "counts"),
}
"""What a factory's product must have, checked when it is built (a clear error, not a late
AttributeError in the decision path)."""


SettingsModel = type[BaseModel]
"""An adapter's settings model (a pydantic model class)."""


class RegistryError(Exception):
    """A plugin or a registration is unusable; the message names the plugin and the fix."""


@dataclass(frozen=True)
class Adapter:
    """One adapter: the ``type`` key of a :class:`Kind`'s slot, its settings and factory.

    ``settings`` must be a pydantic model with ``extra="forbid"`` and a field
    ``type: Literal["<type>"]`` (give it a default to make this type the slot's default).
    ``factory`` is ``"module:function"``, imported only when the adapter is built.
    ``needs`` names other site-file sections this adapter cannot work without, each with why
    (checked when the site file is loaded).
    """

    kind: Kind
    type: str
    settings: SettingsModel
    factory: str
    needs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.kind.value} adapter {self.type!r} ({self.settings.__name__})"
        module, _, attribute = self.factory.partition(":")
        if not module or not attribute:
            raise RegistryError(f"{where}: factory {self.factory!r} is not 'module:function'")
        if self.settings.model_config.get("extra") != "forbid":
            raise RegistryError(f"{where}: settings must refuse unknown keys (extra='forbid')")
        declared = self.settings.model_fields.get("type")
        annotation = None if declared is None else declared.annotation
        literal = typing.get_args(annotation)
        if typing.get_origin(annotation) is not typing.Literal or literal != (self.type,):
            raise RegistryError(f"{where}: settings need a field type: Literal[{self.type!r}]")

    @property
    def is_default(self) -> bool:
        """True when the settings' ``type`` has a default: a slot without ``type`` is this."""
        return not self.settings.model_fields["type"].is_required()


@dataclass(frozen=True)
class Command:
    """A ``cargogate`` sub-command a plugin brings: ``target`` is ``"module:attribute"``, a
    ``typer.Typer`` (mounted as a group) or a function (mounted as one command)."""

    name: str
    target: str


@dataclass(frozen=True)
class Plugin:
    """What one registration module declares; an entry point names it."""

    adapters: Sequence[Adapter] = ()
    commands: Sequence[Command] = ()


class Registry:
    """The adapters and commands of every plugin added, by kind and ``type`` key."""

    def __init__(self) -> None:
        self._adapters: dict[tuple[Kind, str], tuple[Adapter, str]] = {}
        self._commands: dict[str, tuple[Command, str]] = {}
        self.plugins: list[str] = []

    @classmethod
    def from_entry_points(cls, group: str = GROUP) -> Registry:
        """A registry of every plugin installed under ``group`` (ours and third parties')."""
        registry = cls()
        for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
            source = f"entry point {point.name!r} ({point.value}) of group {group!r}"
            try:
                plugin = point.load()
            except Exception as exc:
                raise RegistryError(f"{source}: cannot load: {exc!r}") from exc
            registry.add(plugin, source)
        return registry

    def add(self, plugin: object, source: str = "<code>") -> None:
        """Register ``plugin`` (a :class:`Plugin`, or a registration module with ``ADAPTERS``
        and ``COMMANDS``); a ``type`` or command name taken by another plugin is refused."""
        declared = as_plugin(plugin, source)
        for adapter in declared.adapters:
            key = (adapter.kind, adapter.type)
            if key in self._adapters:
                other = self._adapters[key][1]
                raise RegistryError(
                    f"{source}: {adapter.kind.value} type {adapter.type!r} is already "
                    f"registered by {other}"
                )
            if adapter.is_default and self.default(adapter.kind) is not None:
                raise RegistryError(
                    f"{source}: {adapter.kind.value} type {adapter.type!r} declares itself the "
                    f"default, but {self.default(adapter.kind)!r} already is"
                )
            self._adapters[key] = (adapter, source)
        for command in declared.commands:
            if command.name in self._commands:
                other = self._commands[command.name][1]
                raise RegistryError(
                    f"{source}: command {command.name!r} is already registered by {other}"
                )
            self._commands[command.name] = (command, source)
        self.plugins.append(source)

    def adapters(self, kind: Kind) -> list[Adapter]:
        """The adapters of ``kind``, in ``type`` order (so the schema is stable)."""
        return sorted((a for (k, _), (a, _) in self._adapters.items() if k is kind), key=_type)

    def adapter(self, kind: Kind, type_key: str) -> Adapter:
        found = self._adapters.get((kind, type_key))
        if found is None:
            known = ", ".join(repr(a.type) for a in self.adapters(kind)) or "none"
            raise RegistryError(
                f"no {kind.value} adapter of type {type_key!r}; registered: {known}"
            )
        return found[0]

    def default(self, kind: Kind) -> str | None:
        """The ``type`` a slot of ``kind`` takes when the site file gives none."""
        return next((a.type for a in self.adapters(kind) if a.is_default), None)

    def commands(self) -> list[Command]:
        return [command for command, _ in self._commands.values()]

    def build(self, kind: Kind, settings: BaseModel, ctx: object) -> Any:
        """Build the adapter ``settings`` describe through its registered factory, and check
        that the product has what a ``kind`` adapter needs (a review may be None)."""
        adapter = self.adapter(kind, type_of(settings))
        if not isinstance(settings, adapter.settings):
            raise RegistryError(
                f"{kind.value} type {adapter.type!r} expects {adapter.settings.__name__}, "
                f"got {type(settings).__name__}"
            )
        product = factory(adapter.factory)(settings, ctx)
        if product is None and kind is Kind.REVIEW:
            return None
        missing = [name for name in REQUIRED_ATTRIBUTES[kind] if not hasattr(product, name)]
        if missing:
            raise RegistryError(
                f"{kind.value} type {adapter.type!r}: {adapter.factory} returned "
                f"{type(product).__name__}, which lacks {', '.join(missing)}"
            )
        return product


def as_plugin(declared: object, source: str) -> Plugin:
    """``declared`` as a :class:`Plugin`: a registration module's ``ADAPTERS`` (mappings with
    ``kind``, ``type``, ``settings``, ``factory`` and optionally ``needs``) and ``COMMANDS``
    (mappings with ``name`` and ``target``)."""
    if isinstance(declared, Plugin):
        return declared
    adapters, commands = getattr(declared, "ADAPTERS", None), getattr(declared, "COMMANDS", ())
    if adapters is None:
        raise RegistryError(f"{source}: {declared!r} has no ADAPTERS (and is no Plugin)")
    try:
        return Plugin(
            adapters=tuple(
                Adapter(Kind(a["kind"]), a["type"], a["settings"], a["factory"], a.get("needs", {}))
                for a in adapters
            ),
            commands=tuple(Command(c["name"], c["target"]) for c in commands),
        )
    except RegistryError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(
            f"{source}: a registration must be a mapping with kind (one of "
            f"{', '.join(k.value for k in Kind)}), type, settings and factory: {exc!r}"
        ) from None


def type_of(settings: BaseModel) -> str:
    """The ``type`` key of an adapter's settings."""
    value = getattr(settings, "type", None)
    if not isinstance(value, str):
        raise RegistryError(f"{type(settings).__name__} has no str field 'type'")
    return value


def resolve(target: str) -> Any:
    """The object ``"module:attribute"`` names. This is the registry's lazy import: a factory's
    module (and the vendor library it needs) loads only when an adapter is built."""
    module_name, _, attribute = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot load {target!r}: {exc}") from exc
    return value


@functools.cache
def factory(target: str) -> Callable[[BaseModel, object], object]:
    """The factory ``target`` names (imported once)."""
    value = resolve(target)
    if not callable(value):
        raise RegistryError(f"factory {target!r} is not callable: {value!r}")
    return typing.cast(Callable[[BaseModel, object], object], value)


@functools.cache
def default_registry() -> Registry:
    """Every installed plugin, loaded once per process."""
    registry = Registry.from_entry_points()
    missing = [k.value for k in (Kind.SORTER, Kind.XRAY, Kind.REVIEW) if not registry.adapters(k)]
    if missing:
        raise RegistryError(
            f"no {' / '.join(missing)} adapter is registered under the entry-point group "
            f"{GROUP!r}: is cargogate installed (pip install -e .)?"
        )
    return registry


def registries(*plugins: Plugin) -> Registry:
    """The installed plugins plus ``plugins`` (for tests and embedding)."""
    registry = Registry.from_entry_points()
    for i, plugin in enumerate(plugins):
        registry.add(plugin, f"<plugin {i}>")
    return registry


def _type(adapter: Adapter) -> str:
    return adapter.type
