"""The on-site X-ray inference adapter and the ``model`` command: this package's registration.

Named by the entry point ``inference`` of the group ``cargogate.adapters``; plain data over
the settings model, so it loads neither onnxruntime nor numpy (format:
:mod:`controller.app.registry`).
"""

from __future__ import annotations

from controller.inference.settings import OnnxXray

ADAPTERS = [
    {
        "kind": "xray",
        "type": "onnx",
        "settings": OnnxXray,
        "factory": "controller.inference.factory:onnx_xray",
        "needs": {"intake": "it scores scanner images, and intake says where they come from"},
    },
]

COMMANDS = [{"name": "model", "target": "controller.inference.cli:model_app"}]
