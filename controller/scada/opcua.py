"""The SCADA server: the site's read model on OPC UA, read-only, refreshed every few seconds.

:class:`ScadaServer` is an async context manager. Entering starts an asyncua server on
``settings.host:port``, publishes a first snapshot and refreshes it every
``settings.refresh_s`` from ``read`` (a callable returning the current
:class:`~controller.core.views.SiteView`, e.g. ``Services.snapshot``); leaving stops both.

What is published, under which node ids and types, is :mod:`controller.scada.points`; this
module only maps points onto OPC UA variables:

* **Read-only, three times over**: every variable's access level is CurrentRead only; the
  permission ruleset admits reading, browsing and subscribing, and answers every other
  request (Write, Call, AddNodes, DeleteNodes ...) with ``BadUserAccessDenied``; and the
  library's remote-admin user is off.
* **Quality is honest**: a figure the snapshot lacks is published with
  ``BadWaitingForInitialData``; when ``read`` fails, every variable keeps its last value with
  ``UncertainNoCommunicationLastUsableValue`` until a snapshot is read again. A variable is
  written only when its value or status changes, with the snapshot's wall time as its source
  timestamp, so a subscription reports real changes only.
* **Security** (``settings.security``): a Basic256Sha256 Sign&Encrypt endpoint only, and
  sessions only over a secure channel whose client certificate is on the trust list.

Nothing that happens here stops the controller: a failed refresh is logged (once per streak)
and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError
from cryptography import x509

from controller.console.schemas import Moment
from controller.core.pins import fingerprint, first_certificate
from controller.core.views import SiteView
from controller.scada.points import KEEP, ROOT, SPECS, Catalog, Kind, Point, points
from controller.scada.settings import ScadaSettings
from controller.scada.trust import trust_list

log = logging.getLogger(__name__)

NO_FIGURE = StatusCodes.BadWaitingForInitialData
"""The status of a figure the snapshot lacks (documented in docs/scada.md)."""
STALE = StatusCodes.UncertainNoCommunicationLastUsableValue
"""The status of every variable while snapshots cannot be read."""

_VARIANT = {
    Kind.INT32: ua.VariantType.Int32,
    Kind.INT64: ua.VariantType.Int64,
    Kind.DOUBLE: ua.VariantType.Double,
    Kind.BOOLEAN: ua.VariantType.Boolean,
    Kind.STRING: ua.VariantType.String,
    Kind.DATETIME: ua.VariantType.DateTime,
    Kind.STRING_ARRAY: ua.VariantType.String,
}
_DEFAULT: dict[Kind, object] = {
    Kind.INT32: 0,
    Kind.INT64: 0,
    Kind.DOUBLE: 0.0,
    Kind.BOOLEAN: False,
    Kind.STRING: "",
    Kind.DATETIME: datetime(1601, 1, 1, tzinfo=UTC),  # OPC UA's null DateTime
    Kind.STRING_ARRAY: [],
}

_READ_ONLY_REQUESTS = (
    ObjectIds.CreateSessionRequest_Encoding_DefaultBinary,
    ObjectIds.CloseSessionRequest_Encoding_DefaultBinary,
    ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary,
    ObjectIds.ReadRequest_Encoding_DefaultBinary,
    ObjectIds.BrowseRequest_Encoding_DefaultBinary,
    ObjectIds.BrowseNextRequest_Encoding_DefaultBinary,
    ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary,
    ObjectIds.FindServersRequest_Encoding_DefaultBinary,
    ObjectIds.TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary,
    ObjectIds.RegisterNodesRequest_Encoding_DefaultBinary,
    ObjectIds.UnregisterNodesRequest_Encoding_DefaultBinary,
    ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary,
    ObjectIds.ModifySubscriptionRequest_Encoding_DefaultBinary,
    ObjectIds.DeleteSubscriptionsRequest_Encoding_DefaultBinary,
    ObjectIds.TransferSubscriptionsRequest_Encoding_DefaultBinary,
    ObjectIds.SetPublishingModeRequest_Encoding_DefaultBinary,
    ObjectIds.CreateMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectIds.ModifyMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectIds.SetMonitoringModeRequest_Encoding_DefaultBinary,
    ObjectIds.DeleteMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectIds.PublishRequest_Encoding_DefaultBinary,
    ObjectIds.RepublishRequest_Encoding_DefaultBinary,
    ObjectIds.CloseSecureChannelRequest_Encoding_DefaultBinary,
)


class _ReadOnly(SimpleRoleRuleset):
    """Admits the requests that read, browse and subscribe, for every session alike; any
    other request (Write, Call, AddNodes, DeleteNodes, HistoryUpdate ...) is refused with
    ``BadUserAccessDenied`` before it reaches the address space."""

    def __init__(self) -> None:
        self._allowed = frozenset(ua.NodeId(ua.Int32(i)) for i in _READ_ONLY_REQUESTS)

    def check_validity(self, user: object, action_type_id: object, body: object) -> bool:
        return action_type_id in self._allowed


class _Gate(UserManager):
    """Admits anonymous sessions; with a trust list, only over a secure channel whose client
    certificate (which the client proved it holds the key of) is on it."""

    def __init__(self, endpoint: Callable[[], str], trusted: dict[str, Path] | None) -> None:
        self._endpoint = endpoint
        self._trusted = trusted

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if self._trusted is not None:
            self._check_certificate(certificate)
        return User(role=UserRole.User)

    def _check_certificate(self, certificate: bytes | None) -> None:
        """Raise the refusal the client sees (a service fault with its status code)."""
        assert self._trusted is not None
        if not certificate:
            log.warning(
                "SCADA %s: refused a session without a client certificate", self._endpoint()
            )
            raise ServiceError(StatusCodes.BadSecurityModeRejected)
        try:
            presented = first_certificate(certificate)
            subject = x509.load_der_x509_certificate(presented).subject.rfc4514_string()
        except ValueError:
            log.warning("SCADA %s: refused a client certificate that is not DER", self._endpoint())
            raise ServiceError(StatusCodes.BadCertificateInvalid) from None
        pin = fingerprint(presented)
        if pin not in self._trusted:
            log.warning(
                "SCADA %s: refused client certificate sha256 %s (%s): not in the trust list",
                self._endpoint(),
                pin,
                subject,
            )
            raise ServiceError(StatusCodes.BadCertificateUntrusted)


def _folders() -> frozenset[str]:
    """Node ids of the objects whose children are keyed (alarm sources, lines, lanes, links):
    published as FolderType, the rest as plain objects."""
    folders = set()
    for spec in SPECS.values():
        segments = spec.segments
        for i, segment in enumerate(segments[1:], start=1):
            if segment.startswith("<"):
                folders.add(".".join(segments[:i]))
    return frozenset(folders)


_FOLDERS = _folders()


class ScadaServer:
    """The site's read model on OPC UA (see the module's docstring)."""

    def __init__(
        self,
        settings: ScadaSettings,
        read: Callable[[], SiteView],
        lane_kinds: Mapping[str, Mapping[int, str]] | None = None,
        speed: float = 1.0,
    ) -> None:
        self.settings = settings
        self.port = settings.port
        self._read = read
        self._speed = speed if speed > 0 else 1.0
        self._catalog = Catalog(lane_kinds)
        self._server: Server | None = None
        self._index = 0
        self._objects: dict[tuple[str, ...], Node] = {}
        self._variables: dict[str, tuple[Kind, ua.NodeId]] = {}
        self._published: dict[str, tuple[object, int]] = {}
        """Node id → (value, status code) last written."""
        self._refused: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._stale = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.settings.host}:{self.port}"

    @property
    def node_ids(self) -> frozenset[str]:
        """The string ids of every variable published so far (under the namespace URI)."""
        return frozenset(self._variables)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        trusted = trust_list(s.security.trusted) if s.security is not None else None
        server = Server(user_manager=_Gate(lambda: self.endpoint, trusted))
        try:
            await self._build(server)
            await server.start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await server.stop()
            self._server = None
            if isinstance(exc, OSError):
                raise OSError(f"SCADA server cannot listen on {s.host}:{s.port}: {exc}") from exc
            raise
        if server.bserver is not None:
            self.port = server.bserver.port  # port 0: the one the OS chose
        self._task = asyncio.create_task(self._refreshing(), name="scada")
        for pin, path in (trusted or {}).items():
            log.info("SCADA %s trusts client certificate sha256 %s (%s)", self.endpoint, pin, path)
        log.info("SCADA OPC UA server on %s (namespace %s)", self.endpoint, s.namespace_uri)
        return self

    async def _build(self, server: Server) -> None:
        """Endpoint, security and the first snapshot's nodes, before the server listens."""
        s = self.settings
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("CargoGate SCADA")
        server.allow_remote_admin(False)
        if s.security is not None:
            await server.set_application_uri(s.security.application_uri)
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                permission_ruleset=_ReadOnly(),
            )
            await server.load_certificate(str(s.security.certificate))
            await server.load_private_key(str(s.security.private_key))
        else:
            await server.set_application_uri("urn:cargogate:scada")
            server.set_security_policy(
                [ua.SecurityPolicyType.NoSecurity], permission_ruleset=_ReadOnly()
            )
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        self._index = await server.register_namespace(s.namespace_uri)
        self._server = server
        self._objects = {
            (ROOT,): await server.nodes.objects.add_object(
                self._nodeid(ROOT), ua.QualifiedName(ROOT, self._index)
            )
        }
        await self.refresh()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            await self.refresh()

    # --- publishing --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Publish a fresh snapshot; never raises (a failure is logged once per streak)."""
        try:
            view = self._read()
            at = Moment(view.controller.clock_s, datetime.now(UTC), self._speed)
            latest = points(view, self._catalog, at)
        except Exception:
            if not self._stale:
                log.exception("SCADA: the site snapshot cannot be read; values go uncertain")
            await self._go_stale()
            return
        if self._stale:
            log.info("SCADA: site snapshots readable again")
            self._stale = False
        try:
            await self._publish(latest, at.wall)
        except Exception:
            if not self._failing:
                log.exception("SCADA: publishing a snapshot failed; retrying every refresh")
            self._failing = True
        else:
            self._failing = False

    async def _publish(self, latest: list[Point], wall: datetime) -> None:
        for point in latest:
            node_id = point.node_id
            if node_id not in self._variables and not await self._create(point):
                continue
            kind, nodeid = self._variables[node_id]
            before = self._published.get(node_id)
            if point.value is KEEP:
                value = before[0] if before is not None else _DEFAULT[kind]
                status = StatusCodes.Good
            elif point.value is None:
                value = before[0] if before is not None else _DEFAULT[kind]
                status = NO_FIGURE
            else:
                value, status = point.value, StatusCodes.Good
            if before != (value, status):
                await self._write(nodeid, kind, value, status, wall)
                self._published[node_id] = (value, status)

    async def _go_stale(self) -> None:
        """Every variable keeps its value, marked uncertain (no communication)."""
        self._stale = True
        if self._server is None:
            return
        now = datetime.now(UTC)
        with contextlib.suppress(Exception):
            for node_id, (value, status) in list(self._published.items()):
                if status != STALE:
                    kind, nodeid = self._variables[node_id]
                    await self._write(nodeid, kind, value, STALE, now)
                    self._published[node_id] = (value, STALE)

    async def _write(
        self, nodeid: ua.NodeId, kind: Kind, value: object, status: int, wall: datetime
    ) -> None:
        assert self._server is not None
        await self._server.write_attribute_value(
            nodeid,
            ua.DataValue(
                ua.Variant(value, _VARIANT[kind]),
                StatusCode=ua.StatusCode(ua.UInt32(status)),
                SourceTimestamp=ua.DateTime.fromtimestamp(wall.timestamp(), UTC),
                ServerTimestamp=ua.DateTime.now(UTC),
            ),
        )

    async def _create(self, point: Point) -> bool:
        """The variable of ``point`` and the objects above it; False when its node id is
        taken (a key that spells another node's id): that point is not published (logged
        once)."""
        node_id = point.node_id
        if node_id in self._refused:
            return False
        try:
            parent = await self._object(point.path[:-1])
            kind = point.spec.kind
            nodeid = self._nodeid(node_id)
            variable = await parent.add_variable(
                nodeid,
                ua.QualifiedName(point.path[-1], self._index),
                ua.Variant(_DEFAULT[kind], _VARIANT[kind]),
                varianttype=_VARIANT[kind],
            )
            if kind is Kind.STRING_ARRAY:
                await variable.write_value_rank(ua.ValueRank.OneDimension)
                await variable.write_attribute(
                    AttributeIds.ArrayDimensions,
                    ua.DataValue(ua.Variant([0], ua.VariantType.UInt32)),
                )
            await variable.write_attribute(
                AttributeIds.Description,
                ua.DataValue(ua.Variant(ua.LocalizedText(point.spec.doc))),
            )
        except UaError as exc:
            self._refused.add(node_id)
            log.warning("SCADA: no node for %r: %s", node_id, exc)
            return False
        self._variables[node_id] = (kind, nodeid)
        return True

    async def _object(self, path: tuple[str, ...]) -> Node:
        node = self._objects.get(path)
        if node is not None:
            return node
        parent = await self._object(path[:-1])
        node_id = ".".join(path)
        name = ua.QualifiedName(path[-1], self._index)
        if _pattern_of(path) in _FOLDERS:
            node = await parent.add_folder(self._nodeid(node_id), name)
        else:
            node = await parent.add_object(self._nodeid(node_id), name)
        self._objects[path] = node
        return node

    def _nodeid(self, text: str) -> ua.NodeId:
        return ua.NodeId(ua.String(text), ua.Int16(self._index), ua.NodeIdType.String)


def _pattern_of(path: tuple[str, ...]) -> str:
    """The pattern an object's path matches (``Site.Lines.<line>.Lanes``), or its id."""
    for spec in SPECS.values():
        segments = spec.segments
        if len(segments) > len(path) and all(
            s.startswith("<") or s == p for s, p in zip(segments, path, strict=False)
        ):
            return ".".join(segments[: len(path)])
    return ".".join(path)
