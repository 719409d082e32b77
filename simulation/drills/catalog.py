"""Every drill, in the order ``cargogate drill all`` runs them (and ``--list`` shows them)."""

from __future__ import annotations

from simulation.drills import controller_faults, plc_faults, risk_faults, store_faults, xray_faults
from simulation.drills.framework import Drill

DRILLS: tuple[Drill, ...] = (
    *controller_faults.DRILLS,
    *plc_faults.DRILLS,
    *store_faults.DRILLS,
    *xray_faults.DRILLS,
    *risk_faults.DRILLS,
)


def by_name(name: str) -> Drill | None:
    return next((drill for drill in DRILLS if drill.name == name), None)
