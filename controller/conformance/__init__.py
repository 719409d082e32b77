"""CargoGate's conformance kit: the port contracts as pytest suites that an integrator runs
against their own adapter, before it reaches the floor (docs/integrators.md).

An integrator writes one fixture per port that builds their adapter (``cargogate_sorter``,
``cargogate_xray``, ``cargogate_images``, ``cargogate_risk``; what it returns is described in
:mod:`controller.conformance.harness`) and runs ``pytest --cargogate-conformance=sorter``.

* :mod:`controller.conformance.plugin`: the pytest plugin (the option, collecting the suites).
* :mod:`controller.conformance.harness`: what each port's fixture returns.
* :mod:`controller.conformance.rules`: every rule of every suite, by port.
* :mod:`controller.conformance.checklist`: the checklist file an adapter carries.
* :mod:`controller.conformance.running`: how one rule is played (its own event loop, bounded).
* :mod:`controller.conformance.suite_sorter`, ``suite_xray``, ``suite_images``, ``suite_risk``:
  the suites, one module per port.

This package is the only one that imports pytest: it is a development and integration tool,
never loaded by the controller.
"""
