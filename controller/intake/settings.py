"""Settings for scanner intake (site file ``intake:``): pydantic only.

``intake.sources`` lists where images come from; all of them feed one
:class:`controller.intake.matcher.ImageMatcher`, which the inference service awaits. The
sources are built by :mod:`controller.intake.factory` (which loads numpy, pydicom and
pynetdicom) and registered in :mod:`controller.intake.registration`; in a site file the
``sources`` union is built from every registered image source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, PositiveFloat, model_validator

from controller.core.settings import WRITTEN

_AE_TITLE = r"^[ -~]{1,16}$"
MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InProcessIntake(_Strict):
    """Images pushed in by the twin or a stand-in running in this process."""

    type: Literal["inprocess"]
    name: str = "inprocess"
    line: str | None = None


class WatchFolderIntake(_Strict):
    """PNG / TIFF (8 or 16-bit greyscale) and .npy files named after their parcel."""

    type: Literal["watch_folder"]
    name: str = "watch_folder"
    path: Annotated[Path, WRITTEN]
    """Made if missing; taken files move on to its ``processing/``, ``done/`` and ``failed/``."""
    patterns: list[str] = Field(
        default_factory=lambda: ["*.png", "*.tif", "*.tiff", "*.npy"], min_length=1
    )
    poll_s: PositiveFloat = 0.2
    settle_s: float = Field(default=0.5, ge=0)
    """A file is taken once its size and time have not changed for this long."""
    line: str | None = None


class DicomFolderIntake(_Strict):
    """DICOM / DICOS files; the HAWB is read from Patient ID (DICOS OOI ID)."""

    type: Literal["dicom_folder"]
    name: str = "dicom_folder"
    path: Annotated[Path, WRITTEN]
    patterns: list[str] = Field(default_factory=lambda: ["*.dcm", "*.dicom"], min_length=1)
    poll_s: PositiveFloat = 0.2
    settle_s: float = Field(default=0.5, ge=0)
    line: str | None = None


class DicomScpIntake(_Strict):
    """A DICOM Storage SCP that scanners push images to over the network."""

    type: Literal["dicom_scp"]
    name: str = "dicom_scp"
    ae_title: str = Field(default="CARGOGATE", pattern=_AE_TITLE)
    port: int = Field(default=11112, ge=0, le=65535)
    bind: str = "0.0.0.0"
    allowed_calling_aes: list[Annotated[str, Field(pattern=_AE_TITLE)]] = []
    """Empty accepts any calling AE title."""
    line: str | None = None


class ImageLimits(_Strict):
    """How big an image the intake will decode, checked from the file's header before any
    pixel is decoded: a few hundred KB of PNG can inflate to gigabytes (a decompression
    bomb), and one such file must not take the controller's memory. An image over a limit is
    quarantined and its parcel gets ``bad_image``. Byte sizes take units (``"256 MiB"``).
    """

    max_pixels: int = Field(default=64_000_000, gt=0)
    """Pixels in one image plane (H×W); the default is what inference accepts at most."""
    max_file_bytes: Annotated[ByteSize, Field(gt=0)] = ByteSize(256 * MiB)
    """Size of the file on disk, or of the dataset received by the Storage SCP."""
    max_decoded_bytes: Annotated[ByteSize, Field(gt=0)] = ByteSize(256 * MiB)
    """The decoded array (channels × H × W × bytes per sample) as handed to inference."""


IntakeSourceSettings = Annotated[
    InProcessIntake | WatchFolderIntake | DicomFolderIntake | DicomScpIntake,
    Field(discriminator="type"),
]


class Intake(_Strict):
    """Where scanner images come from and what happens to the ones no parcel claims."""

    sources: list[IntakeSourceSettings] = Field(min_length=1)
    quarantine: Annotated[Path, WRITTEN] = Path("var/quarantine")
    hold_s: PositiveFloat = 30.0
    """How long an image waits for its parcel before it is quarantined."""
    max_held: int = Field(default=10_000, ge=1)
    threat_reports: Annotated[Path | None, WRITTEN] = None
    """Folder for DICOS threat detection reports on DICOM input; None writes none."""
    limits: ImageLimits = ImageLimits()
    """Applied by every source that decodes files or datasets (not to in-process arrays)."""

    @model_validator(mode="after")
    def _names_unique(self) -> Intake:
        names = [source_name(s) for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"intake source names must be unique; repeated: {repeated}")
        return self


def source_name(settings: BaseModel) -> str:
    """An image source's name: its ``name`` setting (a registered third-party source without
    one is named by its ``type``)."""
    return str(getattr(settings, "name", None) or getattr(settings, "type", "source"))
