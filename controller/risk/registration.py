"""The manifest risk feeds: this package's registration.

Named by the entry point ``risk`` of the group ``cargogate.adapters``; plain data over the
settings models (format: :mod:`controller.app.registry`). A feed's ``poll_s`` sets how often
it is fetched.
"""

from __future__ import annotations

from controller.risk.settings import FileRiskFeed, HttpRiskFeed

ADAPTERS = [
    {
        "kind": "risk_feed",
        "type": "file",
        "settings": FileRiskFeed,
        "factory": "controller.risk.factory:file_feed",
    },
    {
        "kind": "risk_feed",
        "type": "http",
        "settings": HttpRiskFeed,
        "factory": "controller.risk.factory:http_feed",
    },
]
