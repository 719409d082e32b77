"""This project's kits by port, each under the id its tests carry (``<port>-<type>``, the stem
of its checklist file; ``risk-file-csv`` and ``risk-file-json`` play one adapter both ways)."""

from __future__ import annotations

from controller.conformance.harness import Kit
from tests.conformance.own.images import ADAPTERS as IMAGE_SOURCES
from tests.conformance.own.images import ImageKit
from tests.conformance.own.risks import KITS as RISK_FEEDS
from tests.conformance.own.risks import RiskKit
from tests.conformance.own.sorters import PROTOCOLS, SorterKit
from tests.conformance.own.xrays import ADAPTERS as XRAY_ADAPTERS
from tests.conformance.own.xrays import XrayKit


def kits(port: str) -> dict[str, Kit]:
    """The kits of ``port``, by test id."""
    if port == "sorter":
        return {f"sorter-{p}": SorterKit(p) for p in PROTOCOLS}
    if port == "xray":
        return {f"xray-{a}": XrayKit(a) for a in XRAY_ADAPTERS}
    if port == "images":
        return {f"images-{a}": ImageKit(a) for a in IMAGE_SOURCES}
    if port == "risk":
        return {f"risk-{k}": RiskKit(k) for k in RISK_FEEDS}
    raise ValueError(f"no kits for port {port!r}")
