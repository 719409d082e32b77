"""The kits of CargoGate's own adapters: what ``cargogate_<port>`` fixtures return."""
