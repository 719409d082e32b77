"""OPC UA for the sorter layout: the node map, the security material and the client transport.

Every field of :mod:`plc_adapters.layout` is one scalar variable with a string NodeId
``ns=<index of namespace_uri>;s=<line>.<Name>`` (for example ``s=L1.Telegram[3].Seq``) under the
object ``<line>`` in Objects; names are in :func:`node_name`. Values are always written as typed
Variants (UInt16, UInt32, String): an untyped write goes out as Int64, which a strict server
refuses. A subscription on ``TelWrite`` only wakes the client up; it then reads the ring back by
sequence number, so a coalesced or dropped notification never loses a telegram.

The emulated PLC's server, which publishes the same node map, is :mod:`plc_adapters.opcua_server`;
this module is the controller's side and imports nothing of the emulator.
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
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from controller.core.pins import fingerprint, first_certificate
from plc_adapters.cert_pins import certificate_der, parse_pin
from plc_adapters.layout import FieldType, Key, Layout, Value, header
from plc_adapters.transport import LinkDownError, LinkRejectedError, quiet_protocol_loggers

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
    """Basic256Sha256 Sign&Encrypt material for one side (paths to PEM or DER files).

    The client must know the server's certificate: ``peer_certificate`` (a file) or
    ``peer_sha256`` (a pin, :mod:`plc_adapters.cert_pins`), checked against the certificate the
    server presents on every connect; ``accept_any_peer`` takes whatever it presents, with a
    warning each time. The server admits only clients whose certificate is in ``trusted``
    (files or folders of certificates); empty, it admits none.
    """

    certificate: Path
    private_key: Path
    peer_certificate: Path | None = None  # the server's certificate, for the client
    application_uri: str = "urn:cargogate:controller"
    peer_sha256: str | None = None  # the server's pin, for the client
    accept_any_peer: bool = False  # client: trust any server certificate (a bench only)
    trusted: tuple[Path, ...] = ()  # server: the client certificates it admits


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
        self._pin = None if security is None else _expected_pin(security)
        quiet_protocol_loggers()

    async def connect(self, wake: Callable[[], None]) -> None:
        await self.close()
        client = Client(self.endpoint, timeout=self.timeout_s)
        try:
            if self.security is not None:
                await self._secure(client, self.security)
            if self.credentials is not None:
                client.set_user(self.credentials.username)
                client.set_password(self.credentials.password)
            await client.connect()
        except UaStatusCodeError as exc:
            await _disconnect(client)
            raise LinkRejectedError(f"{type(exc).__name__}: {exc}") from None
        except LinkDownError:
            await _disconnect(client)
            raise
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
            f.key: client.get_node(string_nodeid(node_name(self.line, f.key), index))
            for f in self.layout
        }
        try:
            handler = _Wake(wake)
            subscription = await client.create_subscription(self.publishing_interval_ms, handler)
            await subscription.subscribe_data_change(self._nodes[header("tel_write")], queuesize=10)
        except (OSError, TimeoutError, UaError) as exc:
            await self.close()
            raise LinkDownError(f"subscription failed: {type(exc).__name__}: {exc}") from None

    async def _secure(self, client: Client, security: Security) -> None:
        """Check the certificate the server presents against the configured one (or pin),
        then set up Sign&Encrypt to exactly that certificate.

        The certificate comes from the endpoint list (a discovery request without security);
        the secure channel is then encrypted to it and asyncua checks that the server signs
        with its key and presents it again when the session is created, so an impostor
        replaying the real certificate gets no further than the channel.
        """
        presented = await _presented_certificate(client)
        seen = fingerprint(presented)
        if security.accept_any_peer:
            log.warning(
                "OPC UA %s: insecure_accept_any_server_cert: trusting the certificate the server "
                "presents (sha256 %s) without checking it; anyone answering here is trusted. "
                "Pin it: server_certificate_sha256: %s",
                self.endpoint,
                seen,
                seen,
            )
        elif seen != self._pin:
            expected = (
                f"the configured server_certificate {security.peer_certificate} (sha256 "
                f"{self._pin})"
                if security.peer_certificate is not None
                else f"the pinned server_certificate_sha256 {self._pin}"
            )
            raise LinkRejectedError(
                f"server certificate mismatch: the server presents sha256 {seen}, not {expected}"
            )
        client.application_uri = security.application_uri
        try:
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(security.certificate),
                private_key=str(security.private_key),
                server_certificate=presented,
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
        except (OSError, ValueError) as exc:  # our own material, not the PLC: no fast retries
            raise LinkRejectedError(
                f"cannot load this controller's certificate {security.certificate} or key "
                f"{security.private_key}: {exc}"
            ) from None

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
        except ua.uaerrors.BadUserAccessDenied as exc:  # the server answered: not from us
            raise LinkRejectedError(f"write refused: {exc}") from None
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


def string_nodeid(name: str, index: int) -> ua.NodeId:
    """A string NodeId, as both ends name every node (asyncua's stubs want its own alias types
    for plain str and int)."""
    return ua.NodeId(name, index)  # type: ignore[arg-type]


def _expected_pin(security: Security) -> str | None:
    """The pin the server's certificate must match (None: any, insecure). A client with
    security but no way to know the server's certificate is refused here, at construction
    (the settings refuse it at load)."""
    if security.accept_any_peer:
        if security.peer_certificate is not None or security.peer_sha256 is not None:
            raise ValueError("accept_any_peer contradicts a configured server certificate")
        return None
    if security.peer_certificate is not None and security.peer_sha256 is not None:
        raise ValueError("give the server's certificate or its pin, not both")
    if security.peer_sha256 is not None:
        return parse_pin(security.peer_sha256)
    if security.peer_certificate is not None:
        return fingerprint(certificate_der(security.peer_certificate))
    raise ValueError(
        "security needs the server's certificate (peer_certificate or peer_sha256), "
        "or accept_any_peer for a bench"
    )


async def _presented_certificate(client: Client) -> bytes:
    """The DER certificate the server offers with its Basic256Sha256 Sign&Encrypt endpoint."""
    endpoints = await client.connect_and_get_server_endpoints()
    for endpoint in endpoints:
        if (
            endpoint.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI
            and endpoint.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt
            and endpoint.ServerCertificate
        ):
            try:
                return first_certificate(endpoint.ServerCertificate)
            except ValueError:
                raise LinkRejectedError("the server's certificate is not DER") from None
    raise LinkRejectedError("the server offers no Basic256Sha256 Sign&Encrypt endpoint")


async def _disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await client.disconnect()
