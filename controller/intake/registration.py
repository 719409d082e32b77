"""The scanner intake sources and the ``intake`` command: this package's registration.

Named by the entry point ``intake`` of the group ``cargogate.adapters``; plain data over the
settings models, so it loads neither numpy nor pydicom nor pynetdicom (format:
:mod:`controller.app.registry`).
"""

from __future__ import annotations

from controller.intake.settings import (
    DicomFolderIntake,
    DicomScpIntake,
    InProcessIntake,
    WatchFolderIntake,
)

_FACTORY = "controller.intake.factory"

ADAPTERS = [
    {
        "kind": "image_source",
        "type": "inprocess",
        "settings": InProcessIntake,
        "factory": f"{_FACTORY}:inprocess_source",
    },
    {
        "kind": "image_source",
        "type": "watch_folder",
        "settings": WatchFolderIntake,
        "factory": f"{_FACTORY}:folder_source",
    },
    {
        "kind": "image_source",
        "type": "dicom_folder",
        "settings": DicomFolderIntake,
        "factory": f"{_FACTORY}:folder_source",
    },
    {
        "kind": "image_source",
        "type": "dicom_scp",
        "settings": DicomScpIntake,
        "factory": f"{_FACTORY}:dicom_scp_source",
    },
]

COMMANDS = [{"name": "intake", "target": "controller.intake.cli:intake_app"}]
