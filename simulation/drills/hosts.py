"""OPC UA servers shared by the drills of one run.

Starting an asyncua server costs seconds (it builds the standard address space), more than a
drill's whole burst. The drills of one ``cargogate drill`` run therefore share one emulated
OPC UA server per namespace, each drill's lines published on it as objects of their own (a PLC
serving several lines does the same). A drill that takes the server down (plc-restart) has a
server of its own.
"""

from __future__ import annotations

import contextlib

from plc_adapters.opcua_server import OpcUaHost


class OpcUaHosts:
    """One :class:`OpcUaHost` per namespace on 127.0.0.1, started on first use."""

    def __init__(self) -> None:
        self._hosts: dict[str, OpcUaHost] = {}

    def host(self, namespace: str) -> OpcUaHost:
        host = self._hosts.get(namespace)
        if host is None:
            host = self._hosts[namespace] = OpcUaHost("127.0.0.1", 0, namespace)
        return host

    async def aclose(self) -> None:
        hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            with contextlib.suppress(Exception):
                await host.stop()
