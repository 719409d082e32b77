"""The fixtures the conformance kit asks for, one per port, each parametrized over this
project's adapters of that port (:mod:`tests.conformance.own.catalog`)."""

from __future__ import annotations

import pytest

from controller.conformance.harness import Kit
from tests.conformance.own.catalog import kits

SORTERS, XRAYS, IMAGES, RISKS = (kits(port) for port in ("sorter", "xray", "images", "risk"))


@pytest.fixture(params=list(SORTERS.values()), ids=list(SORTERS))
def cargogate_sorter(request: pytest.FixtureRequest) -> Kit:
    kit: Kit = request.param
    return kit


@pytest.fixture(params=list(XRAYS.values()), ids=list(XRAYS))
def cargogate_xray(request: pytest.FixtureRequest) -> Kit:
    kit: Kit = request.param
    return kit


@pytest.fixture(params=list(IMAGES.values()), ids=list(IMAGES))
def cargogate_images(request: pytest.FixtureRequest) -> Kit:
    kit: Kit = request.param
    return kit


@pytest.fixture(params=list(RISKS.values()), ids=list(RISKS))
def cargogate_risk(request: pytest.FixtureRequest) -> Kit:
    kit: Kit = request.param
    return kit
