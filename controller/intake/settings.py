"""Settings for scanner intake (site file ``intake:``) and the factories that build it.

``intake.sources`` lists where images come from; all of them feed one
:class:`controller.intake.matcher.ImageMatcher`, which the inference service awaits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from controller.clock import Clock
from controller.ports import AlarmSink

if TYPE_CHECKING:  # the adapters (pydicom, pynetdicom) load only when intake is built
    from controller.intake.dicom_scp import DicomStorageScp
    from controller.intake.folder import FolderSource
    from controller.intake.inprocess import InProcessScanner
    from controller.intake.matcher import ImageMatcher
    from controller.intake.threat_report import DicomReferences, ThreatReportWriter

_AE_TITLE = r"^[ -~]{1,16}$"


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
    path: Path
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
    path: Path
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


IntakeSourceSettings = Annotated[
    InProcessIntake | WatchFolderIntake | DicomFolderIntake | DicomScpIntake,
    Field(discriminator="type"),
]


class Intake(_Strict):
    """Where scanner images come from and what happens to the ones no parcel claims."""

    sources: list[IntakeSourceSettings] = Field(min_length=1)
    quarantine: Path = Path("var/quarantine")
    hold_s: PositiveFloat = 30.0
    """How long an image waits for its parcel before it is quarantined."""
    max_held: int = Field(default=10_000, ge=1)
    threat_reports: Path | None = None
    """Folder for DICOS threat detection reports on DICOM input; None writes none."""

    @model_validator(mode="after")
    def _names_unique(self) -> Intake:
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"intake source names must be unique; repeated: {repeated}")
        return self


IntakeSource = Union["InProcessScanner", "FolderSource", "DicomStorageScp"]


class IntakeParts:
    """The matcher and every source built from :class:`Intake` settings."""

    def __init__(
        self,
        matcher: ImageMatcher,
        sources: dict[str, IntakeSource],
        references: DicomReferences,
        reports: ThreatReportWriter | None,
    ) -> None:
        self.matcher = matcher
        self.sources = sources
        self.references = references
        self.reports = reports


def build_intake(
    settings: Intake,
    *,
    clock: Clock | None = None,
    alarms: AlarmSink | None = None,
    alarm_thresholds: Mapping[str, float] | None = None,
) -> IntakeParts:
    """Build the matcher, each source, and (if configured) the threat report writer.

    Run ``parts.matcher.run()`` and each ``source.run()`` as tasks; register
    ``parts.reports`` with the inference service (``service.listeners.append``).
    """
    from controller.intake.matcher import ImageMatcher
    from controller.intake.quarantine import Quarantine
    from controller.intake.threat_report import DicomReferences, ThreatReportWriter

    matcher = ImageMatcher(
        Quarantine(settings.quarantine),
        clock=clock,
        hold_s=settings.hold_s,
        max_held=settings.max_held,
        alarms=alarms,
    )
    references = DicomReferences()
    sources = {s.name: build_source(s, matcher, references, clock) for s in settings.sources}
    reports = (
        ThreatReportWriter(settings.threat_reports, references, alarm_thresholds or {})
        if settings.threat_reports is not None
        else None
    )
    return IntakeParts(matcher, sources, references, reports)


def build_source(
    settings: InProcessIntake | WatchFolderIntake | DicomFolderIntake | DicomScpIntake,
    matcher: ImageMatcher,
    references: DicomReferences | None = None,
    clock: Clock | None = None,
) -> IntakeSource:
    """One intake source from its settings."""
    from controller.intake.dicom_scp import DicomStorageScp
    from controller.intake.folder import FolderSource, decode_dicom_file, decode_image_file
    from controller.intake.inprocess import InProcessScanner

    if isinstance(settings, InProcessIntake):
        return InProcessScanner(matcher, line=settings.line, clock=clock, name=settings.name)
    if isinstance(settings, WatchFolderIntake | DicomFolderIntake):
        dicom = isinstance(settings, DicomFolderIntake)
        return FolderSource(
            settings.path,
            matcher,
            decode_dicom_file if dicom else decode_image_file,
            patterns=settings.patterns,
            poll_s=settings.poll_s,
            settle_s=settings.settle_s,
            line=settings.line,
            name=settings.name,
            references=references if dicom else None,
            clock=clock,
        )
    return DicomStorageScp(
        matcher,
        ae_title=settings.ae_title,
        port=settings.port,
        bind=settings.bind,
        allowed_calling_aes=settings.allowed_calling_aes,
        line=settings.line,
        name=settings.name,
        references=references,
        clock=clock,
    )
