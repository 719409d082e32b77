"""OPC UA for the sorter layout: the client transport and the emulated PLC's server.

Every field of :mod:`plc_adapters.layout` is one scalar variable with a string NodeId
``ns=<index of namespace_uri>;s=<line>.<Name>`` (for example ``s=L1.Telegram[3].Seq``) under the
object ``<line>`` in Objects; names are in :func:`node_name`. Values are always written as typed
Variants (UInt16, UInt32, String): an untyped write goes out as Int64, which a strict server
refuses. A subscription on ``TelWrite`` only wakes the client up; it then reads the ring back by
sequence number, so a coalesced or dropped notification never loses a telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from plc_adapters.emulator import EmulatedPlc
from plc_adapters.layout import FieldType, Key, Layout, Owner, Value, header
from plc_adapters.transport import LinkDownError, LinkRejectedError

log = logging.getLogger(__name__)

VARIANT = {
    FieldType.U16: ua.VariantType.UInt16,
    FieldType.U32: ua.VariantType.UInt32,
    FieldType.ASCII32: ua.VariantType.String,
}
AREA_NAMES = {"lane": "Lane", "telegram": "Telegram", "reply": "Reply"}


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def node_name(line: str, key: Key) -> str:
    """The string identifier of a field's NodeId, e.g. ``L1.TelWrite``, ``L1.Reply[0].Lane``."""
    area, index, name = key
    if area == "header":
        return f"{line}.{camel(name)}"
    return f"{line}.{AREA_NAMES[area]}[{index}].{camel(name)}"


def to_variant(type_: FieldType, value: Value) -> ua.Variant:
    if type_ is FieldType.ASCII32:
        assert isinstance(value, bytes)
        return ua.Variant(value.decode("utf-8", errors="replace"), ua.VariantType.String)
    return ua.Variant(value, VARIANT[type_])


def from_variant(type_: FieldType, value: Any) -> Value:
    if type_ is FieldType.ASCII32:
        return value.encode("utf-8") if isinstance(value, str) else b""
    if not isinstance(value, int):
        raise LinkRejectedError(f"expected an integer for a {type_.value} field, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Security:
    """Basic256Sha256 Sign&Encrypt material for one side (paths to PEM or DER files)."""

    certificate: Path
    private_key: Path
    peer_certificate: Path | None = None  # the server's certificate, for the client
    application_uri: str = "urn:cargogate:controller"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


class OpcUaTransport:
    """Client side: one OPC UA session to one line's PLC."""

    def __init__(
        self,
        url: str,
        namespace_uri: str,
        line: str,
        layout: Layout,
        timeout_s: float = 2.0,
        publishing_interval_ms: float = 10.0,
        security: Security | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.endpoint = url
        self.namespace_uri = namespace_uri
        self.line = line
        self.layout = layout
        self.timeout_s = timeout_s
        self.publishing_interval_ms = publishing_interval_ms
        self.security = security
        self.credentials = credentials
        self._client: Client | None = None
        self._nodes: dict[Key, Node] = {}

    async def connect(self, wake: Callable[[], None]) -> None:
        await self.close()
        client = Client(self.endpoint, timeout=self.timeout_s)
        try:
            if self.security is not None:
                client.application_uri = self.security.application_uri
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    certificate=str(self.security.certificate),
                    private_key=str(self.security.private_key),
                    server_certificate=None
                    if self.security.peer_certificate is None
                    else str(self.security.peer_certificate),
                    mode=ua.MessageSecurityMode.SignAndEncrypt,
                )
            if self.credentials is not None:
                client.set_user(self.credentials.username)
                client.set_password(self.credentials.password)
            await client.connect()
        except UaStatusCodeError as exc:
            await _disconnect(client)
            raise LinkRejectedError(f"{type(exc).__name__}: {exc}") from None
        except (OSError, TimeoutError, UaError) as exc:
            await _disconnect(client)
            raise LinkDownError(f"{type(exc).__name__}: {exc}") from None
        self._client = client
        try:
            index = await client.get_namespace_index(self.namespace_uri)
        except ValueError:
            await self.close()
            raise LinkRejectedError(f"the server has no namespace {self.namespace_uri!r}") from None
        except (OSError, TimeoutError, UaError) as exc:
            await self.close()
            raise LinkDownError(f"{type(exc).__name__}: {exc}") from None
        self._nodes = {
            f.key: client.get_node(_nodeid(node_name(self.line, f.key), index)) for f in self.layout
        }
        try:
            handler = _Wake(wake)
            subscription = await client.create_subscription(self.publishing_interval_ms, handler)
            await subscription.subscribe_data_change(self._nodes[header("tel_write")], queuesize=10)
        except (OSError, TimeoutError, UaError) as exc:
            await self.close()
            raise LinkDownError(f"subscription failed: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _disconnect(client)

    async def read(self, keys: Sequence[Key]) -> list[Value]:
        client = self._require()
        try:
            results = await client.read_attributes([self._nodes[k] for k in keys])
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise LinkDownError(f"read failed: {type(exc).__name__}: {exc}") from None
        values: list[Value] = []
        for key, result in zip(keys, results, strict=True):
            if result.StatusCode is not None and not result.StatusCode.is_good():
                raise LinkRejectedError(f"{node_name(self.line, key)}: {result.StatusCode}")
            variant = result.Value
            values.append(
                from_variant(
                    self.layout.by_key[key].type, None if variant is None else variant.Value
                )
            )
        return values

    async def write(self, items: Sequence[tuple[Key, Value]]) -> None:
        client = self._require()
        nodes = [self._nodes[k] for k, _ in items]
        data = [ua.DataValue(to_variant(self.layout.by_key[k].type, v)) for k, v in items]
        try:
            results = await client.write_values(nodes, data, raise_on_partial_error=False)
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise LinkDownError(f"write failed: {type(exc).__name__}: {exc}") from None
        for (key, _), status in zip(items, results, strict=True):
            if not status.is_good():
                raise LinkRejectedError(f"write of {node_name(self.line, key)} refused: {status}")

    def _require(self) -> Client:
        if self._client is None:
            raise LinkDownError("not connected")
        return self._client


class _Wake:
    """Subscription handler: any change of ``TelWrite`` only wakes the adapter up."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self._wake()

    def status_change_notification(self, status: Any) -> None:
        self._wake()


def _nodeid(name: str, index: int) -> ua.NodeId:
    """A string NodeId (asyncua's stubs want its own alias types for plain str and int)."""
    return ua.NodeId(name, index)  # type: ignore[arg-type]


async def _disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await client.disconnect()


class _Users(UserManager):
    """Accepts exactly one configured user name and password."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        wanted = self._credentials
        if username == wanted.username and password == wanted.password:
            return User(role=UserRole.User)
        return None


class OpcUaHost:
    """One OPC UA server at ``host:port`` serving the objects of one or more lines.

    Several lines of a PLC (or of the emulator) may share one endpoint; each line is one
    object. Stopping the host stops the endpoint for every line on it; starting it again
    rebuilds every line's variables from its PLC memory.
    """

    def __init__(
        self,
        host: str,
        port: int,
        namespace_uri: str,
        security: Security | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.namespace_uri = namespace_uri
        self.security = security
        self.credentials = credentials
        self.server: Server | None = None
        self.index = 0
        self._lines: dict[str, OpcUaServerImage] = {}
        self._built: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    async def serve(self, image: OpcUaServerImage) -> None:
        """Start the server if needed and publish ``image``'s line on it."""
        async with self._lock:
            self._lines[image.line] = image
            if self.server is None:
                await self._start()
            elif image.line not in self._built:
                await image.build(self.server, self.index)
                self._built.add(image.line)

    async def _start(self) -> None:
        server = Server(user_manager=_Users(self.credentials) if self.credentials else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("CargoGate emulated sorter PLC")
        if self.security is not None:
            await server.set_application_uri(self.security.application_uri)
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await server.load_certificate(str(self.security.certificate))
            await server.load_private_key(str(self.security.private_key))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.credentials is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        self.index = await server.register_namespace(self.namespace_uri)
        for image in self._lines.values():
            await image.build(server, self.index)
        self._built = set(self._lines)
        try:
            await server.start()
        except OSError:
            with contextlib.suppress(Exception):
                await server.stop()
            raise
        if self.port == 0 and server.bserver is not None:
            self.port = server.bserver.port  # the OS chose a free port: keep it for restarts
        self.server = server
        log.info("emulated PLC serving %s (lines %s)", self.endpoint, ", ".join(self._lines))

    async def stop(self) -> None:
        """Stop the endpoint (every line on it); never raises."""
        async with self._lock:
            server, self.server = self.server, None
            self._built.clear()
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()


class OpcUaServerImage:
    """One line's variables on an :class:`OpcUaHost`.

    Variables the PLC owns are read-only to clients; ``PlcClockMs`` is computed at read time.
    """

    def __init__(self, host: OpcUaHost, line: str, layout: Layout) -> None:
        self.host = host
        self.line = line
        self.layout = layout
        self._nodeids: dict[Key, ua.NodeId] = {}
        self._pending: dict[Key, Value] = {}
        self._plc: EmulatedPlc | None = None
        self._server: Server | None = None

    @property
    def endpoint(self) -> str:
        return self.host.endpoint

    async def start(self, plc: EmulatedPlc) -> None:
        self._plc = plc
        await self.host.serve(self)

    async def stop(self) -> None:
        await self.host.stop()

    async def build(self, server: Server, index: int) -> None:
        """Create this line's object and variables on ``server`` from the PLC's memory."""
        plc = self._plc
        assert plc is not None
        self._pending.clear()
        line_object = await server.nodes.objects.add_object(
            _nodeid(self.line, index), ua.QualifiedName(self.line, index)
        )
        parents: dict[tuple[str, int], Node] = {}
        for f in self.layout:
            area, slot, _ = f.key
            parent = line_object
            if area != "header":
                parent = parents.get((area, slot)) or await line_object.add_object(
                    _nodeid(f"{self.line}.{AREA_NAMES[area]}[{slot}]", index),
                    ua.QualifiedName(f"{AREA_NAMES[area]}[{slot}]", index),
                )
                parents[(area, slot)] = parent
            nodeid = _nodeid(node_name(self.line, f.key), index)
            variable = await parent.add_variable(
                nodeid,
                ua.QualifiedName(node_name(self.line, f.key).rsplit(".", 1)[1], index),
                to_variant(f.type, plc.mem[f.key]),
                varianttype=VARIANT[f.type],
            )
            self._nodeids[f.key] = nodeid
            if f.owner is Owner.CONTROLLER:
                await variable.set_writable()
                server.set_attribute_value_setter(nodeid, self._setter(f.key, f.type))
        server.set_attribute_value_callback(
            self._nodeids[header("plc_clock_ms")],
            lambda _nodeid, _attr: ua.DataValue(to_variant(FieldType.U32, plc.clock_ms())),
        )
        self._server = server

    def _setter(self, key: Key, type_: FieldType) -> Callable[[Any, Any, ua.DataValue], None]:
        def setter(node: Any, attr: Any, value: ua.DataValue) -> None:
            node.attributes[attr].value = value
            if self._plc is not None and value.Value is not None:
                self._plc.written(key, from_variant(type_, value.Value.Value))

        return setter

    def changed(self, key: Key, value: Value) -> None:
        if self.host.server is not None:
            self._pending[key] = value

    async def flush(self) -> None:
        """Publish PLC writes in the order they were made (slots before their index)."""
        server = self.host.server
        if server is None or server is not self._server:
            self._pending.clear()
            return
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            variant = to_variant(self.layout.by_key[key].type, value)
            await server.write_attribute_value(self._nodeids[key], ua.DataValue(variant))
