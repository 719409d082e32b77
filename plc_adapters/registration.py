"""The wire sorter adapters and the PLC emulator command: this package's registration.

Named by the entry point ``plc`` of the group ``cargogate.adapters`` (``pyproject.toml``).
Plain data over the settings models: it imports neither asyncua nor pymodbus, nor CargoGate's
application layer (see :mod:`controller.app.registry` for the format).
"""

from __future__ import annotations

from plc_adapters.settings import ModbusSorter, OpcUaSorter

ADAPTERS = [
    {
        "kind": "sorter",
        "type": "opcua",
        "settings": OpcUaSorter,
        "factory": "plc_adapters.factory:sorter",
    },
    {
        "kind": "sorter",
        "type": "modbus",
        "settings": ModbusSorter,
        "factory": "plc_adapters.factory:sorter",
    },
]

COMMANDS = [{"name": "plc-emulator", "target": "plc_adapters.cli:plc_emulator"}]
