"""The adapter registry: our plugins load through entry points, a third party's adapter goes in
by registration alone, and the site schema built from the registry reports problems at their
path in the file."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from controller.app.parts import BuildContext
from controller.app.registry import (
    Adapter,
    Kind,
    Plugin,
    Registry,
    RegistryError,
    default_registry,
    registries,
)
from controller.app.services import Services
from controller.app.site import SiteConfig, parse_config
from controller.core.domain import DestinationReply
from controller.core.link import LinkState
from controller.core.settings import ConfigError
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.settings import OpcUaSorter

ROOT = Path(__file__).resolve().parents[1]


class AcmeSorter(BaseModel):
    """A third party's sorter settings, as its own package would declare them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["acme"]
    belt_name: str


class AcmeAdapter(InProcessSorter):
    """The third party's adapter: here an in-process sorter the test drives, with a link."""

    link_state = LinkState.UP
    replied = asyncio.Event()

    async def reply(self, reply: DestinationReply) -> None:
        await super().reply(reply)
        self.replied.set()


BUILT: dict[str, AcmeAdapter] = {}


def acme_sorter(settings: AcmeSorter, ctx: BuildContext) -> AcmeAdapter:
    BUILT[ctx.line] = sorter = AcmeAdapter(ctx.line, alarms=ctx.alarms)
    return sorter


def not_a_sorter(settings: AcmeSorter, ctx: BuildContext) -> object:
    return object()


# a registration module as a third party writes it (plain data), named by its entry point
ACME = types.SimpleNamespace(
    ADAPTERS=[
        {
            "kind": "sorter",
            "type": "acme",
            "settings": AcmeSorter,
            "factory": f"{__name__}:acme_sorter",
        }
    ]
)


def acme_registry() -> Registry:
    registry = Registry.from_entry_points()
    registry.add(ACME, "entry point 'acme' (tests)")
    return registry


def demo_raw(tmp_path: Path) -> dict[str, object]:
    raw = yaml.safe_load((ROOT / "config" / "site.example.yaml").read_text())
    raw["store"] = {"journal_path": str(tmp_path / "journal.sqlite")}
    raw.pop("intake")
    raw.pop("risk_feeds")
    raw["xray"] = {"type": "none"}
    raw["console"] = {"port": 0}  # loopback on a free port: no certificate needed
    assert isinstance(raw, dict)
    return raw


def test_our_plugins_load_through_their_entry_points() -> None:
    registry = default_registry()
    assert {a.type for a in registry.adapters(Kind.SORTER)} == {"inprocess", "modbus", "opcua"}
    assert {a.type for a in registry.adapters(Kind.XRAY)} == {"none", "onnx", "plant", "drill"}
    assert {a.type for a in registry.adapters(Kind.PLANT)} == {"twin"}
    assert {a.type for a in registry.adapters(Kind.RISK_FEED)} == {"file", "http"}
    assert {a.type for a in registry.adapters(Kind.REVIEW)} == {"none", "plant", "station"}
    sources = {a.type for a in registry.adapters(Kind.IMAGE_SOURCE)}
    assert sources == {"inprocess", "watch_folder", "dicom_folder", "dicom_scp"}
    assert [registry.default(k) for k in (Kind.SORTER, Kind.XRAY, Kind.REVIEW, Kind.PLANT)] == [
        "inprocess",
        "none",
        "none",
        "twin",
    ]
    names = {c.name for c in registry.commands()}
    assert names == {"model", "intake", "plc-emulator", "simulate", "sweep", "replay", "drill"}
    assert any("entry point 'twin'" in p for p in registry.plugins)


async def test_a_third_party_sorter_goes_in_by_registration_alone(tmp_path: Path) -> None:
    raw = demo_raw(tmp_path)
    raw["lines"][0]["sorter"] = {"type": "acme", "belt_name": "north"}  # type: ignore[index]
    registry = acme_registry()
    config = parse_config(raw, registry=registry)
    assert isinstance(config.lines[0].sorter, AcmeSorter)
    services = Services(config, registry)
    stop = asyncio.Event()
    async with services:
        serving = asyncio.create_task(services.run(stop=stop))
        sorter = BUILT["L1"]
        for i in range(3):
            sorter.request(i + 1, f"ACME{i}", services.clock.now())
        async with asyncio.timeout(10):
            while len(sorter.replies) < 3:
                await sorter.replied.wait()
                sorter.replied.clear()
        assert services.links() == {"L1 sorter": LinkState.UP}
        stop.set()
        final = await serving
    assert final.kpis.decisions == 3
    assert [r.tracking_id for r in sorter.replies] == [1, 2, 3]


def test_schema_problems_keep_their_path_in_the_file(tmp_path: Path) -> None:
    registry = acme_registry()
    raw = demo_raw(tmp_path)
    raw["lines"][0]["sorter"] = {"type": "acme", "belt_name": 7}  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="acme.yaml", registry=registry)
    assert caught.value.problems == [
        ("lines.0.sorter.belt_name", "7", "Input should be a valid string")
    ]
    raw["lines"][0]["sorter"] = {"type": "acmee"}  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, registry=registry)
    [(where, _, message)] = caught.value.problems
    assert where == "lines.0.sorter"
    assert "'acmee'" in message
    assert "'acme'" in message  # the registered types are listed, the third party's too
    assert "'opcua'" in message


def test_an_adapter_missing_the_section_it_needs_is_named_at_load(tmp_path: Path) -> None:
    raw = demo_raw(tmp_path)
    raw["xray"] = {"type": "onnx", "model": "models/xray-cnn-v1.onnx"}
    raw["review"] = {"type": "plant"}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="site.yaml")
    assert caught.value.source == "site.yaml"
    assert [(w, v) for w, v, _ in caught.value.problems] == [
        ("xray.type", "'onnx'"),
        ("review.type", "'plant'"),
    ]
    assert "needs the site's 'intake' section" in caught.value.problems[0][2]
    assert "needs the site's 'plant' section" in caught.value.problems[1][2]


def test_a_slot_without_type_takes_the_registered_default(tmp_path: Path) -> None:
    raw = demo_raw(tmp_path)
    raw["lines"][0].pop("sorter")  # type: ignore[attr-defined]
    raw.pop("review")
    config = parse_config(raw)
    assert config.lines[0].sorter.model_dump() == {"type": "inprocess"}
    assert config.review.model_dump() == {"type": "none"}
    assert config.plant is None


def test_registrations_that_cannot_work_are_refused_with_the_reason() -> None:
    registry = acme_registry()
    with pytest.raises(RegistryError, match="'opcua' is already registered by entry point 'plc'"):
        registry.add(Plugin((Adapter(Kind.SORTER, "opcua", OpcUaSorter, "x:y"),)), "tests")

    class Loose(BaseModel):
        type: Literal["loose"]

    with pytest.raises(RegistryError, match="extra='forbid'"):
        Adapter(Kind.SORTER, "loose", Loose, "tests:x")
    with pytest.raises(RegistryError, match=r"type: Literal\['other'\]"):
        Adapter(Kind.SORTER, "other", AcmeSorter, "tests:x")
    with pytest.raises(RegistryError, match="not 'module:function'"):
        Adapter(Kind.SORTER, "acme", AcmeSorter, "tests.x")
    with pytest.raises(RegistryError, match=r"kind .*sorter"):
        Registry().add(types.SimpleNamespace(ADAPTERS=[{"kind": "belt"}]), "tests")


def test_a_factory_whose_product_is_no_sorter_is_refused_when_built(tmp_path: Path) -> None:
    registry = Registry()
    registry.add(
        Plugin((Adapter(Kind.SORTER, "acme", AcmeSorter, f"{__name__}:not_a_sorter"),)), "tests"
    )
    with pytest.raises(RegistryError, match="returned object, which lacks line, telegrams"):
        registry.build(Kind.SORTER, AcmeSorter(type="acme", belt_name="n"), None)


def test_the_static_site_shape_refuses_to_validate_without_the_registry() -> None:
    with pytest.raises(TypeError, match="parse_config"):
        SiteConfig.model_validate({"site": {"id": "X"}})


def test_registries_adds_plugins_to_the_installed_ones() -> None:
    registry = registries(Plugin((Adapter(Kind.SORTER, "acme", AcmeSorter, "x:y"),)))
    assert "acme" in {a.type for a in registry.adapters(Kind.SORTER)}
    assert "opcua" in {a.type for a in registry.adapters(Kind.SORTER)}
