"""Builds the wire sorter adapters from their settings; this module loads asyncua and pymodbus.

The registry (:mod:`plc_adapters.registration`) names :func:`sorter` as the factory of the
``opcua`` and ``modbus`` sorter types, so the protocol libraries load only when a site has
such a line.
"""

from __future__ import annotations

from typing import Protocol

from controller.core.clock import Clock
from controller.core.ports import AlarmSink, SorterPort
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.opcua_wire import Credentials, OpcUaTransport, Security
from plc_adapters.settings import (
    OPCUA_PREFETCH_SLOTS,
    ModbusSorter,
    OpcUaSorter,
    host_port,
    timing,
)
from plc_adapters.wire_sorter import WireSorter


class SorterContext(Protocol):
    """What building a sorter reads from the composition root's context."""

    @property
    def line(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def alarms(self) -> AlarmSink: ...


def sorter(settings: OpcUaSorter | ModbusSorter, ctx: SorterContext) -> WireSorter:
    """Registry factory of the ``opcua`` and ``modbus`` sorter types."""
    return build_wire_sorter(ctx.line, settings, ctx.clock, ctx.alarms)


def build_sorter(
    line_id: str,
    settings: OpcUaSorter | ModbusSorter,
    clock: Clock,
    alarms: AlarmSink | None = None,
) -> SorterPort:
    """The controller-side sorter adapter for one line (a :class:`WireSorter`).

    It connects when entered (``async with``) or when the core first iterates its telegrams,
    and reconnects by itself.
    """
    return build_wire_sorter(line_id, settings, clock, alarms)


def build_wire_sorter(
    line_id: str,
    settings: OpcUaSorter | ModbusSorter,
    clock: Clock,
    alarms: AlarmSink | None = None,
) -> WireSorter:
    """As :func:`build_sorter`, typed as the adapter (for its extra status and controls)."""
    layout = settings.link.layout()
    if isinstance(settings, ModbusSorter):
        modbus = ModbusTransport(
            settings.host,
            settings.port,
            settings.unit_id,
            layout,
            settings.register_base,
            settings.timeout_s,
            settings.retries,
        )
        link = timing(settings.link, settings.poll_s)
        return WireSorter(line_id, modbus, layout, clock, alarms, link)
    host_port(settings.endpoint)
    security = None
    if settings.security is not None:
        s = settings.security
        security = Security(
            s.certificate,
            s.private_key,
            s.server_certificate,
            s.application_uri,
            s.server_certificate_sha256,
            s.insecure_accept_any_server_cert,
        )
    password = settings.password()
    credentials = (
        Credentials(settings.username, password)
        if settings.username is not None and password is not None
        else None
    )
    opcua = OpcUaTransport(
        settings.endpoint,
        settings.namespace_uri,
        settings.object_name or line_id,
        layout,
        settings.timeout_s,
        settings.publishing_interval_ms,
        security,
        credentials,
    )
    link = timing(settings.link, settings.poll_s, OPCUA_PREFETCH_SLOTS)
    return WireSorter(line_id, opcua, layout, clock, alarms, link)
