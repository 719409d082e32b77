"""The composition root: a site file in, one :class:`Services` out.

``Services(config)`` builds every part the site names through the adapter registry
(:mod:`controller.app.parts`, :mod:`controller.app.registry`) and gives them one lifecycle
(:mod:`controller.app.services`): ``async with services:`` starts them, ``services.run()``
serves, leaving stops them. No adapter is named here: adding one never touches this package.
"""

from __future__ import annotations

from controller.app.parts import BuildContext, Parts, Plant, PlantContext, RealWorld, assemble
from controller.app.services import Services, StartupError

Site = Services
"""The former name of :class:`Services` (``Site(config).run()`` behaves as before)."""

__all__ = [
    "BuildContext",
    "Parts",
    "Plant",
    "PlantContext",
    "RealWorld",
    "Services",
    "Site",
    "StartupError",
    "assemble",
]
