"""Scripted fault drills (``cargogate drill``): faults struck at the real controller and the
emulated PLCs, each checked from the journal and what the PLCs saw (docs/drills.md)."""
