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
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from controller.core.pins import fingerprint, first_certificate
from plc_adapters.cert_pins import trust_list
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


class _Gate(UserManager):
    """Admits a session when it is activated: with security on, only over a secure channel
    whose client certificate is in the trust list; with credentials, only for that user.

    The certificate checked is the secure channel's, which the client proved it holds the key
    of. asyncua's ``certificate_validator`` hook sees only the certificate a client names when
    it creates the session, which need not be the channel's, and a session over an unsecured
    channel (which asyncua's server lets any client open, for discovery) names none.
    """

    def __init__(
        self, endpoint: str, trusted: dict[str, Path] | None, credentials: Credentials | None
    ) -> None:
        self._endpoint = endpoint
        self._trusted = trusted
        self._credentials = credentials

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if self._trusted is not None:
            self._check_certificate(certificate)
        wanted = self._credentials
        if wanted is not None and (username != wanted.username or password != wanted.password):
            return None
        return User(role=UserRole.User)

    def _check_certificate(self, certificate: bytes | None) -> None:
        """Raise the rejection the client sees (a service fault with the status code)."""
        assert self._trusted is not None
        if not certificate:
            log.warning(
                "emulated PLC %s: refused a session without a client certificate "
                "(security None): this server admits only Sign&Encrypt with a trusted certificate",
                self._endpoint,
            )
            raise ServiceError(StatusCodes.BadSecurityModeRejected)
        try:
            presented = first_certificate(certificate)
            subject = x509.load_der_x509_certificate(presented).subject.rfc4514_string()
        except ValueError:
            log.warning(
                "emulated PLC %s: refused a client certificate that is not DER", self._endpoint
            )
            raise ServiceError(StatusCodes.BadCertificateInvalid) from None
        pin = fingerprint(presented)
        if pin not in self._trusted:
            log.warning(
                "emulated PLC %s: refused client certificate sha256 %s (%s): not in the trust list",
                self._endpoint,
                pin,
                subject,
            )
            raise ServiceError(StatusCodes.BadCertificateUntrusted)


class OpcUaHost:
    """One OPC UA server at ``host:port`` serving the objects of one or more lines.

    Several lines of a PLC (or of the emulator) may share one endpoint; each line is one
    object. Stopping the host stops the endpoint for every line on it; starting it again
    rebuilds every line's variables from its PLC memory (and reads the trust list again).
    With ``security`` the endpoint is Sign&Encrypt only and admits only the client
    certificates of ``security.trusted`` (:class:`_Gate`).
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
        trusted = None if self.security is None else trust_list(self.security.trusted)
        gate = None
        if trusted is not None or self.credentials is not None:
            gate = _Gate(self.endpoint, trusted, self.credentials)
        server = Server(user_manager=gate)
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
        elif self.security is not None:  # no X.509 user tokens: the channel's certificate counts
            server.set_identity_tokens([ua.AnonymousIdentityToken])
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
        for pin, path in (trusted or {}).items():
            log.info(
                "emulated PLC %s trusts client certificate sha256 %s (%s)", self.endpoint, pin, path
            )

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
            plc, variant = self._plc, value.Value
            refused = (
                plc is not None
                and variant is not None
                and not plc.written(key, from_variant(type_, variant.Value))
            )
            if refused:  # a claim while another controller owns the PLC: the value stays
                raise ua.uaerrors.BadUserAccessDenied
            node.attributes[attr].value = value

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
