"""CargoGate controller: the core that decides where each parcel goes, and its services."""

__version__ = "0.1.0"
