"""The SCADA server read by an OPC UA client that is not CargoGate's.

CargoGate's own OPC UA code is asyncua, so asyncua reading it back would prove little: the
client here is node-opcua (Node.js, another code base and another team), driven by
``tests/scada_client/client.cjs``. It is installed from ``tests/scada_client/package.json`` into
``var/scada-client`` (``.ci/run`` does it); without Node.js or that install, the client tests
skip, naming the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from pydantic import ValidationError

from controller.console.schemas import Moment
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
    SiteView,
    SorterHealth,
)
from controller.scada.opcua import ScadaServer
from controller.scada.points import INT32_MAX, SPECS, Catalog, Kind, points, typed
from controller.scada.settings import ScadaSecurity, ScadaSettings
from controller.scada.trust import TrustListError
from plc_adapters.certs import CertificatePair, make_certificate

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "scada_client" / "client.cjs"
MODULES = ROOT / "var" / "scada-client" / "node_modules"
NODE = shutil.which("node")
INSTALL = (
    "mkdir -p var/scada-client && cp tests/scada_client/package*.json var/scada-client/ && "
    "npm ci --prefix var/scada-client"
)
needs_client = pytest.mark.skipif(
    NODE is None or not (MODULES / "node-opcua-client").is_dir(),
    reason=f"the independent OPC UA client (node-opcua) is not installed: {INSTALL}",
)
NAMESPACE = "urn:cargogate:scada"
LANE_KINDS = {
    "L1": {1: "release", 2: "inspection", 3: "inspection", 9: "exception"},
    "L2": {1: "release", 3: "inspection", 9: "exception"},
    "L3": {1: "release", 9: "exception"},  # in the site file, not (yet) in the snapshot
}


# --- a site to publish ---------------------------------------------------------------------


def kpis() -> KpiView:
    """Real KPIs over two lines: 3 decisions (L1 lanes 2 and 3, L2 lane 3), 1 hit and 3
    misses (L1 1/1, L2 0/2), 1 verdict pending, 1 deadline miss."""
    k = Kpis(target_s=150.0, windows_s=(300.0,))
    for tid, at in ((1, 0.0), (2, 0.0), (3, 10.0), (4, 20.0)):
        k.arrived("L1" if tid < 3 else "L2", tid, at)
    k.cleared("L1", 1, 0.0, now=130.0)
    k.cleared("L1", 2, 0.0, now=200.0)
    k.cleared("L2", 3, 10.0, now=410.0)
    k.arrived("L2", 5, 390.0)
    k.decided("L1", 2, (Reason.LOW_RISK_CLEAN_XRAY,))
    k.decided("L1", 3, (Reason.RISK_RED,))
    k.decided("L2", 3, (Reason.RISK_RED,))
    k.deadline_misses += 1
    return k.view(420.0)


def line(name: str, link: LinkState, lanes: dict[int, LaneStatus], **figures: Any) -> LineView:
    health = SorterHealth(
        link=link,
        line_state=figures.pop("line_state", ""),
        heartbeat_age_s=figures.pop("heartbeat_age_s", None),
    )
    defaults = {"on_belt": 0, "at_inspection": 0, "awaiting_review": 0}
    return LineView(line=name, health=health, lanes=lanes, **{**defaults, **figures})


CLOCK_S = 1000.0


def site_view(**changes: Any) -> SiteView:
    lines = (
        line(
            "L1",
            LinkState.UP,
            {3: LaneStatus.FULL},
            line_state="Execute",
            heartbeat_age_s=0.25,
            on_belt=12,
            at_inspection=3,
            awaiting_review=1,
        ),
        line("L2", LinkState.DOWN, {7: LaneStatus.BLOCKED}, on_belt=4, journal_backlog=9),
    )
    view = SiteView(
        site="FRA-1",
        controller=ControllerView(
            clock_s=CLOCK_S, kpis=kpis(), lines=lines, holds=2, open_parcels=19
        ),
        risk_results=1234,
        risk_results_evicted=5,
        journal_rows=3_000_000_000,  # beyond Int32: published as Int64
        journal_commits=31,
        forwarder=ForwarderView(
            connected=True, last_error=None, backlog=17, shipped_total=540, watermark=543
        ),
        links={"central database": LinkState.UP, "risk feeds": LinkState.DEGRADED},
        alarms=(
            AlarmView("L2/plc-link", "PLC at opc.tcp://plc-l2:4840 is down", CLOCK_S - 30.0),
            AlarmView("risk/conflict", "HAWB 123 has two results", CLOCK_S - 10.0, "ops", "seen"),
        ),
    )
    return replace(view, **changes)


class Site:
    """What the server reads: the current view, or a failure while ``broken``."""

    def __init__(self) -> None:
        self.view = site_view()
        self.broken = False

    def read(self) -> SiteView:
        if self.broken:
            raise RuntimeError("the controller is busy elsewhere")
        return self.view


@pytest.fixture
def site() -> Site:
    return Site()


@pytest.fixture
async def server(site: Site) -> AsyncIterator[ScadaServer]:
    settings = ScadaSettings(enabled=True, port=0, refresh_s=60)  # tests refresh by hand
    async with ScadaServer(settings, site.read, LANE_KINDS, speed=2.0) as scada:
        yield scada


# --- the independent client ----------------------------------------------------------------


async def independent(request: dict[str, Any]) -> dict[str, Any]:
    """One run of the node-opcua client: the request in, its JSON answer out."""
    process = await _client()
    out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), 90)
    return _answer(out, err)


async def _client() -> asyncio.subprocess.Process:
    assert NODE is not None
    return await asyncio.create_subprocess_exec(
        NODE,
        str(CLIENT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )


def _answer(out: bytes, err: bytes) -> dict[str, Any]:
    lines = out.decode().strip().splitlines()
    assert lines, f"no answer from the client; stderr: {err.decode()[-2000:]}"
    answer = json.loads(lines[-1])
    assert isinstance(answer, dict)
    return answer


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


READ = [
    "Site.Id",
    "Site.SnapshotTime",
    "Site.Kpi.Decisions",
    "Site.Kpi.DeadlineMisses",
    "Site.Kpi.Hits",
    "Site.Kpi.Misses",
    "Site.Kpi.ShareWithinTarget",
    "Site.Kpi.VerdictsPending",
    "Site.Kpi.OpenParcels",
    "Site.Alarms.ActiveCount",
    "Site.Alarms.UnacknowledgedCount",
    "Site.Alarms.ActiveSources",
    "Site.Alarms.L2/plc-link.Active",
    "Site.Alarms.L2/plc-link.Severity",
    "Site.Alarms.L2/plc-link.Since",
    "Site.Alarms.L2/plc-link.Acknowledged",
    "Site.Alarms.risk/conflict.AcknowledgedBy",
    "Site.Alarms.risk/conflict.Severity",
    "Site.Journal.Rows",
    "Site.Forwarder.Backlog",
    "Site.Forwarder.LastError",
    "Site.Links.central database",
    "Site.Links.risk feeds",
    "Site.Lines.L1.LinkState",
    "Site.Lines.L1.LinkUp",
    "Site.Lines.L1.LineState",
    "Site.Lines.L1.HeartbeatAgeSeconds",
    "Site.Lines.L1.OpenParcels",
    "Site.Lines.L1.Kpi.Decisions",
    "Site.Lines.L1.Kpi.ShareWithinTarget",
    "Site.Lines.L1.Lanes.1.State",
    "Site.Lines.L1.Lanes.1.Kind",
    "Site.Lines.L1.Lanes.3.State",
    "Site.Lines.L1.Lanes.3.StatusWord",
    "Site.Lines.L1.Lanes.3.Available",
    "Site.Lines.L1.Lanes.3.Decisions",
    "Site.Lines.L2.LinkUp",
    "Site.Lines.L2.HeartbeatAgeSeconds",
    "Site.Lines.L2.JournalBacklog",
    "Site.Lines.L2.Kpi.ShareWithinTarget",
    "Site.Lines.L2.Lanes.7.State",
    "Site.Lines.L2.Lanes.7.Kind",
    "Site.Lines.L3.OnBelt",
    "Site.Lines.L3.Lanes.9.Kind",
]


@needs_client
async def test_an_independent_client_reads_typed_kpis_lanes_links_and_alarms(
    server: ScadaServer,
) -> None:
    answer = await independent(
        {
            "endpoint": server.endpoint,
            "namespace": NAMESPACE,
            "read": READ,
            "browse": ["Site", "Site.Lines", "Site.Lines.L1.Lanes", "Site.Alarms"],
            "attributes": ["Site.Lines.L2.HeartbeatAgeSeconds", "Site.Lines.L3.OnBelt"],
        }
    )
    assert "error" not in answer, answer
    assert answer["namespaceIndex"] > 0
    v = answer["values"]

    def read(node: str) -> tuple[str, object]:
        """(data type, value) of a Good read."""
        assert v[node]["status"] == "Good", (node, v[node])
        return v[node]["dataType"], v[node]["value"]

    assert read("Site.Id") == ("String", "FRA-1")
    assert read("Site.Kpi.Decisions") == ("Int64", "3")
    assert read("Site.Kpi.DeadlineMisses") == ("Int64", "1")
    assert (read("Site.Kpi.Hits"), read("Site.Kpi.Misses")) == (("Int64", "1"), ("Int64", "3"))
    assert read("Site.Kpi.ShareWithinTarget") == ("Double", 0.25)
    assert read("Site.Kpi.VerdictsPending") == ("Int32", 1)
    assert read("Site.Kpi.OpenParcels") == ("Int32", 19)
    assert read("Site.Alarms.ActiveCount") == ("Int32", 2)
    assert read("Site.Alarms.UnacknowledgedCount") == ("Int32", 1)
    assert read("Site.Alarms.ActiveSources") == ("String", ["L2/plc-link", "risk/conflict"])
    assert v["Site.Alarms.ActiveSources"]["array"] is True
    assert read("Site.Alarms.L2/plc-link.Active") == ("Boolean", True)
    assert read("Site.Alarms.L2/plc-link.Severity") == ("String", "critical")
    assert read("Site.Alarms.L2/plc-link.Acknowledged") == ("Boolean", False)
    assert read("Site.Alarms.risk/conflict.AcknowledgedBy") == ("String", "ops")
    assert read("Site.Alarms.risk/conflict.Severity") == ("String", "info")
    # raised 30 s ago on the controller's clock, which runs at twice the wall's speed
    kind, since = read("Site.Alarms.L2/plc-link.Since")
    _, taken = read("Site.SnapshotTime")
    assert kind == "DateTime"
    assert isinstance(since, str)
    assert isinstance(taken, str)
    assert abs(_time(taken) - _time(since) - timedelta(seconds=15)) < timedelta(milliseconds=2)
    assert abs(datetime.now(UTC) - _time(taken)) < timedelta(seconds=30)
    assert read("Site.Journal.Rows") == ("Int64", "3000000000")
    assert read("Site.Forwarder.Backlog") == ("Int64", "17")
    assert read("Site.Forwarder.LastError") == ("String", "")
    assert read("Site.Links.central database") == ("String", "up")
    assert read("Site.Links.risk feeds") == ("String", "degraded")
    assert read("Site.Lines.L1.LinkState") == ("String", "up")
    assert read("Site.Lines.L1.LinkUp") == ("Boolean", True)
    assert read("Site.Lines.L1.LineState") == ("String", "Execute")
    assert read("Site.Lines.L1.HeartbeatAgeSeconds") == ("Double", 0.25)
    assert read("Site.Lines.L1.OpenParcels") == ("Int32", 15)
    assert read("Site.Lines.L1.Kpi.Decisions") == ("Int64", "2")
    assert read("Site.Lines.L1.Kpi.ShareWithinTarget") == ("Double", 0.5)
    # lane 1 is in the site file and not in the PLC's list: available
    assert read("Site.Lines.L1.Lanes.1.State") == ("String", "available")
    assert read("Site.Lines.L1.Lanes.1.Kind") == ("String", "release")
    assert read("Site.Lines.L1.Lanes.3.State") == ("String", "full")
    assert read("Site.Lines.L1.Lanes.3.StatusWord") == ("Int32", 1)
    assert read("Site.Lines.L1.Lanes.3.Available") == ("Boolean", False)
    assert read("Site.Lines.L1.Lanes.3.Decisions") == ("Int64", "1")
    assert read("Site.Lines.L2.LinkUp") == ("Boolean", False)
    assert read("Site.Lines.L2.JournalBacklog") == ("Int32", 9)
    assert read("Site.Lines.L2.Kpi.ShareWithinTarget") == ("Double", 0.0)
    # a lane the PLC reports that the site file does not name gets nodes too
    assert read("Site.Lines.L2.Lanes.7.State") == ("String", "blocked")
    assert read("Site.Lines.L2.Lanes.7.Kind") == ("String", "")
    assert read("Site.Lines.L3.Lanes.9.Kind") == ("String", "exception")
    # figures the snapshot lacks: a bad status and no value (as OPC UA has it for a bad
    # status), never a made-up zero; the variable keeps its data type
    for node, kind in (
        ("Site.Lines.L2.HeartbeatAgeSeconds", "Double"),  # no heartbeat
        ("Site.Lines.L3.OnBelt", "Int32"),  # a line the snapshot does not list
    ):
        assert v[node]["status"] == "BadWaitingForInitialData", (node, v[node])
        assert v[node]["value"] is None
        assert answer["attributes"][node]["dataType"] == kind

    browse = answer["browse"]
    assert {c["name"] for c in browse["Site"]["children"]} >= {
        "Id",
        "SnapshotTime",
        "Kpi",
        "Alarms",
        "Journal",
        "Forwarder",
        "Risk",
        "Links",
        "Lines",
    }
    assert {c["name"] for c in browse["Site.Lines"]["children"]} == {"L1", "L2", "L3"}
    assert {c["name"] for c in browse["Site.Lines.L1.Lanes"]["children"]} == {"1", "2", "3", "9"}
    assert "L2/plc-link" in {c["name"] for c in browse["Site.Alarms"]["children"]}
    assert f"ns={answer['namespaceIndex']};s=Site.Lines.L1" in {
        c["nodeId"] for c in browse["Site.Lines"]["children"]
    }


@needs_client
async def test_every_node_is_read_only_for_the_client(server: ScadaServer, site: Site) -> None:
    answer = await independent(
        {
            "endpoint": server.endpoint,
            "namespace": NAMESPACE,
            "attributes": ["Site.Kpi.OpenParcels", "Site.Alarms.L2/plc-link.Active"],
            "write": "Site.Kpi.OpenParcels",
            "read": ["Site.Kpi.OpenParcels"],
        }
    )
    assert "error" not in answer, answer
    assert answer["write"] == "BadUserAccessDenied"
    assert answer["values"]["Site.Kpi.OpenParcels"]["value"] == 19
    for attributes in answer["attributes"].values():
        assert attributes["accessLevel"] == 1  # CurrentRead only
        assert attributes["userAccessLevel"] == 1
        assert attributes["description"]


@needs_client
async def test_a_subscriber_sees_changes_and_stale_snapshots(
    server: ScadaServer, site: Site
) -> None:
    process = await _client()
    assert process.stdin is not None
    assert process.stdout is not None
    request = {
        "endpoint": server.endpoint,
        "namespace": NAMESPACE,
        "subscribe": {"node": "Site.Lines.L1.OnBelt", "changes": 3, "timeoutMs": 20000},
    }
    process.stdin.write(json.dumps(request).encode())
    await process.stdin.drain()
    process.stdin.close()

    stdout = process.stdout

    async def subscribed() -> None:
        """Until the client says it subscribed (node-opcua may print warnings first)."""
        said: list[bytes] = []
        while (line := await stdout.readline()) != b"subscribed\n":
            assert line, f"the client ended before subscribing: {said}"
            said.append(line)

    await asyncio.wait_for(subscribed(), 90)

    l1, l2 = site.view.controller.lines
    site.view = replace(
        site.view, controller=replace(site.view.controller, lines=(replace(l1, on_belt=13), l2))
    )
    await server.refresh()
    await asyncio.sleep(0.5)  # the publishing interval, so the two changes come apart
    site.broken = True
    await server.refresh()
    out, err = await asyncio.wait_for(process.communicate(), 60)
    answer = _answer(out, err)
    assert "error" not in answer, answer
    assert answer["changes"] == [
        {"status": "Good", "value": 12},
        {"status": "Good", "value": 13},
        {"status": "UncertainNoCommunicationLastUsableValue", "value": 13},
    ]


@needs_client
async def test_a_cleared_alarm_keeps_its_nodes_and_new_keys_get_theirs(
    server: ScadaServer, site: Site
) -> None:
    l1, l2 = site.view.controller.lines
    site.view = replace(
        site.view,
        alarms=site.view.alarms[1:],  # L2/plc-link cleared
        controller=replace(
            site.view.controller,
            lines=(l1, replace(l2, health=SorterHealth(LinkState.UP))),
        ),
        links={**site.view.links, "inference": LinkState.UP},
    )
    await server.refresh()
    answer = await independent(
        {
            "endpoint": server.endpoint,
            "namespace": NAMESPACE,
            "read": [
                "Site.Alarms.L2/plc-link.Active",
                "Site.Alarms.L2/plc-link.Message",
                "Site.Alarms.ActiveSources",
                "Site.Lines.L2.LinkState",
                "Site.Links.inference",
            ],
        }
    )
    values = {node: (v["status"], v["value"]) for node, v in answer["values"].items()}
    assert values == {
        "Site.Alarms.L2/plc-link.Active": ("Good", False),
        "Site.Alarms.L2/plc-link.Message": ("Good", "PLC at opc.tcp://plc-l2:4840 is down"),
        "Site.Alarms.ActiveSources": ("Good", ["risk/conflict"]),
        "Site.Lines.L2.LinkState": ("Good", "up"),
        "Site.Links.inference": ("Good", "up"),
    }


# --- security --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    server: CertificatePair
    client: CertificatePair
    stranger: CertificatePair
    folder: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder: Path = tmp_path_factory.mktemp("scada-pki")
    hosts = ("127.0.0.1", "localhost")
    return Pki(
        server=make_certificate(folder / "server", "scada", NAMESPACE, hosts),
        client=make_certificate(folder / "client", "historian", "urn:test:historian", hosts),
        stranger=make_certificate(folder / "stranger", "stranger", "urn:test:stranger", hosts),
        folder=folder,
    )


def _secured(pki: Pki) -> ScadaSettings:
    security = ScadaSecurity(
        certificate=pki.server.certificate,
        private_key=pki.server.private_key,
        trusted=[pki.client.certificate],
        application_uri=NAMESPACE,
    )
    return ScadaSettings(enabled=True, port=0, refresh_s=60, security=security)


def _as_client(pki: Pki, pair: CertificatePair, name: str) -> dict[str, str]:
    return {
        "certificate": str(pair.certificate),
        "privateKey": str(pair.private_key),
        "serverCertificate": str(pki.server.certificate),
        "pki": str(pki.folder / f"{name}-client-pki"),
        "applicationUri": pair.application_uri,
    }


@needs_client
async def test_sign_and_encrypt_admits_the_trusted_client_only(pki: Pki, site: Site) -> None:
    async with ScadaServer(_secured(pki), site.read, LANE_KINDS) as server:
        request = {"endpoint": server.endpoint, "namespace": NAMESPACE, "read": ["Site.Id"]}
        trusted = await independent({**request, "security": _as_client(pki, pki.client, "a")})
        assert trusted.get("values", {}).get("Site.Id", {}).get("value") == "FRA-1", trusted
        stranger = await independent({**request, "security": _as_client(pki, pki.stranger, "b")})
        plain = await independent(request)
    assert "BadCertificateUntrusted" in stranger.get("error", ""), stranger
    assert "values" not in stranger
    assert "error" in plain, plain  # no endpoint without security: the client will not try
    assert "values" not in plain


async def test_a_session_over_an_unsecured_channel_is_refused(pki: Pki, site: Site) -> None:
    """A hand-made client that skips the secure channel anyway (asyncua's low-level calls:
    here the client is the attacker, not the witness) is refused at session activation."""
    async with ScadaServer(_secured(pki), site.read) as server:
        client = Client(server.endpoint, timeout=5.0)
        await client.connect_socket()
        try:
            await client.send_hello()
            await client.open_secure_channel()
            with contextlib.suppress(UaError):  # asyncua's client stops here, by its own rule
                await client.create_session()
            params = ua.ActivateSessionParameters()
            params.UserIdentityToken = ua.AnonymousIdentityToken()
            with pytest.raises(UaStatusCodeError) as refused:
                await client.uaclient.activate_session(params)
        finally:
            client.disconnect_socket()
    assert type(refused.value).__name__ == "BadSecurityModeRejected"


async def test_a_trust_entry_that_is_no_certificate_stops_the_start(
    pki: Pki, site: Site, tmp_path: Path
) -> None:
    settings = _secured(pki)
    assert settings.security is not None
    bad = settings.security.model_copy(update={"trusted": [pki.client.private_key]})
    with pytest.raises(TrustListError, match=r"historian-key\.pem"):
        async with ScadaServer(settings.model_copy(update={"security": bad}), site.read):
            pass
    missing = settings.security.model_copy(update={"trusted": [tmp_path / "nowhere.der"]})
    with pytest.raises(TrustListError, match=r"nowhere\.der"):
        async with ScadaServer(settings.model_copy(update={"security": missing}), site.read):
            pass


# --- without a client: settings, values, the documented node map ------------------------------


def test_the_hubs_network_needs_security_or_an_explicit_waiver(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="serves the hub's network"):
        ScadaSettings(enabled=True, host="0.0.0.0")
    assert ScadaSettings(enabled=True, host="0.0.0.0", allow_insecure_network=True)
    assert ScadaSettings(enabled=False, host="0.0.0.0")  # off: nothing served
    assert ScadaSettings(enabled=True, host="::1")
    assert _secured(pki).model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(ValidationError, match="trusted"):
        ScadaSecurity(certificate=Path("a.der"), private_key=Path("a.pem"), trusted=[])


async def test_a_port_in_use_fails_the_start_naming_it(server: ScadaServer, site: Site) -> None:
    taken = ScadaSettings(enabled=True, port=server.port)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        async with ScadaServer(taken, site.read):
            pass


def test_values_are_typed_held_in_range_or_marked_as_no_figure() -> None:
    assert typed(Kind.INT32, 2**40) == INT32_MAX
    assert typed(Kind.INT32, True) == 1
    assert typed(Kind.INT32, 1.5) is None
    assert typed(Kind.INT64, "12") is None
    assert typed(Kind.DOUBLE, math.nan) is None
    assert typed(Kind.DOUBLE, 10**400) == math.inf
    assert typed(Kind.BOOLEAN, 1) is None
    assert typed(Kind.STRING, "x" * 10_000) == "x" * 4096
    assert typed(Kind.DATETIME, datetime(1500, 1, 1, tzinfo=UTC)) is None
    assert typed(Kind.DATETIME, datetime(2030, 1, 1)) is None  # no zone: no time
    assert typed(Kind.STRING_ARRAY, ["a", None, 3]) == ["a", "3"]


async def test_an_odd_snapshot_publishes_what_it_can(server: ScadaServer, site: Site) -> None:
    """Values that are not what the view promises (a None count, a NaN time) mark only their
    own points; nothing raises and the rest is published."""
    l1, l2 = site.view.controller.lines
    odd = replace(l1, on_belt=cast(int, None))
    site.view = replace(
        site.view,
        controller=replace(site.view.controller, lines=(odd, l2)),
        alarms=(AlarmView("L1/odd", "odd time", math.nan),),
    )
    at_view = points(site.view, Catalog(LANE_KINDS), _moment())
    by_id = {p.node_id: p.value for p in at_view}
    assert by_id["Site.Lines.L1.OnBelt"] is None
    assert by_id["Site.Lines.L1.OpenParcels"] is None
    assert by_id["Site.Alarms.L1/odd.Since"] is None
    assert by_id["Site.Alarms.L1/odd.Message"] == "odd time"
    await server.refresh()
    assert "Site.Alarms.L1/odd.Since" in server.node_ids


def _moment() -> Moment:
    return Moment(CLOCK_S, datetime.now(UTC))


def test_the_documented_node_map_is_what_is_published() -> None:
    """docs/scada.md's table lists every point pattern with its type, and nothing else."""
    text = (ROOT / "docs" / "scada.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(Site[^`]*)` \| (\S+) \|", text, re.MULTILINE))
    assert rows == {pattern: str(spec.kind) for pattern, spec in SPECS.items()}


def test_every_published_node_matches_a_documented_pattern() -> None:
    patterns = [re.compile(re.sub(r"<[a-z]+>", ".+", re.escape(p))) for p in SPECS]
    published = [p.node_id for p in points(site_view(), Catalog(LANE_KINDS), _moment())]
    assert len(published) > 100
    assert len(set(published)) == len(published)
    for node_id in published:
        assert any(p.fullmatch(node_id) for p in patterns), node_id


# --- the controller serving it ---------------------------------------------------------------


@needs_client
async def test_the_controller_serves_its_site_to_scada(tmp_path: Path) -> None:
    """The demo hub (the twin playing two lines) with ``scada`` on: an independent client
    reads the running controller's figures."""
    from controller.app.services import Services
    from controller.app.site import parse_config

    raw: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
    raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    raw["console"] = {"enabled": False}
    raw["scada"] = {"enabled": True, "port": 0, "refresh_s": 0.2}
    services = Services(parse_config(raw))
    stop = asyncio.Event()
    async with services:
        serving = asyncio.create_task(services.run(stop=stop))
        assert services.scada is not None
        await asyncio.sleep(3)  # a few seconds of parcels
        answer = await independent(
            {
                "endpoint": services.scada.endpoint,
                "namespace": NAMESPACE,
                "read": [
                    "Site.Id",
                    "Site.Kpi.Decisions",
                    "Site.Lines.L1.LinkState",
                    "Site.Lines.L2.Lanes.9.Kind",
                ],
            }
        )
        stop.set()
        await serving
    values = {node: v["value"] for node, v in answer["values"].items()}
    assert values["Site.Id"] == "DEMO-HUB"
    assert int(values["Site.Kpi.Decisions"]) > 0
    assert values["Site.Lines.L1.LinkState"] == "up"
    assert values["Site.Lines.L2.Lanes.9.Kind"] == "exception"
