"""The digital twin as adapters: the ``plant`` section, the in-process sorter it plays, its
X-ray detector and review room, the fault drills' scripted detector, and the
``simulate``/``sweep``/``replay``/``drill`` commands.

Named by the entry point ``twin`` of the group ``cargogate.adapters``: the controller reaches
the twin only through this registration. Plain data over the settings models (format:
:mod:`controller.app.registry`); SimPy and numpy load only when a plant is built.
"""

from __future__ import annotations

from simulation.drills.xray import DrillXray
from simulation.settings import InProcessSorterSettings, PlantReview, PlantXray, TwinPlant

_FACTORY = "simulation.site_plant"
_NEEDS_PLANT = {"plant": "the plant model plays it"}

ADAPTERS = [
    {"kind": "plant", "type": "twin", "settings": TwinPlant, "factory": f"{_FACTORY}:twin_plant"},
    {
        "kind": "sorter",
        "type": "inprocess",
        "settings": InProcessSorterSettings,
        "factory": f"{_FACTORY}:plant_sorter",
    },
    {
        "kind": "xray",
        "type": "plant",
        "settings": PlantXray,
        "factory": f"{_FACTORY}:plant_xray",
        "needs": _NEEDS_PLANT,
    },
    {
        "kind": "review",
        "type": "plant",
        "settings": PlantReview,
        "factory": f"{_FACTORY}:plant_review",
        "needs": _NEEDS_PLANT,
    },
    {
        "kind": "xray",
        "type": "drill",
        "settings": DrillXray,
        "factory": "simulation.drills.xray:drill_xray",
    },
]

COMMANDS = [
    {"name": "simulate", "target": "simulation.cli:simulate"},
    {"name": "sweep", "target": "simulation.cli:sweep"},
    {"name": "replay", "target": "simulation.cli:replay"},
    {"name": "drill", "target": "simulation.drills.cli:drill"},
]
