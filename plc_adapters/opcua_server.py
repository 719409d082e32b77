"""The emulated PLC's OPC UA server: one line's variables on an endpoint shared by its lines.

Only the PLC emulator (``cargogate plc-emulator``, the tests and the round-trip benchmark)
loads this module; the controller's client (:mod:`plc_adapters.opcua_wire`) never does. Both
ends name and type the nodes by the same functions of :mod:`plc_adapters.opcua_wire`, so the
node map is stated once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from plc_adapters.layout import FieldType, Key, Layout, Owner, Value, header
from plc_adapters.opcua_wire import (
    AREA_NAMES,
    VARIANT,
    Credentials,
    Security,
    from_variant,
    node_name,
    string_nodeid,
    to_variant,
)
from plc_adapters.server_image import ServedPlc
from plc_adapters.transport import quiet_protocol_loggers

log = logging.getLogger(__name__)


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
        quiet_protocol_loggers()

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
        self._plc: ServedPlc | None = None
        self._server: Server | None = None

    @property
    def endpoint(self) -> str:
        return self.host.endpoint

    async def start(self, plc: ServedPlc) -> None:
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
            string_nodeid(self.line, index), ua.QualifiedName(self.line, index)
        )
        parents: dict[tuple[str, int], Node] = {}
        for f in self.layout:
            area, slot, _ = f.key
            parent = line_object
            if area != "header":
                parent = parents.get((area, slot)) or await line_object.add_object(
                    string_nodeid(f"{self.line}.{AREA_NAMES[area]}[{slot}]", index),
                    ua.QualifiedName(f"{AREA_NAMES[area]}[{slot}]", index),
                )
                parents[(area, slot)] = parent
            nodeid = string_nodeid(node_name(self.line, f.key), index)
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
            self._pending.pop(key, None)  # to the end: flushed in the order of the last writes
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
