"""Builds scanner intake from its settings: the matcher, each image source, the threat report
writer. This module loads numpy, pydicom and pynetdicom.

:func:`build_intake` is what the composition root calls for the site's ``intake`` section; it
builds each source through ``source_factory`` (the registry's, so third-party sources work) or,
by default, through this package's own factories, which are also what
:mod:`controller.intake.registration` registers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from controller.core.clock import Clock
from controller.core.ports import AlarmSink
from controller.core.settings import ConfigError
from controller.intake.dicom_scp import DicomStorageScp
from controller.intake.faults import DEFAULT_LIMITS
from controller.intake.folder import FolderSource, decoder
from controller.intake.inprocess import InProcessScanner
from controller.intake.matcher import ImageMatcher
from controller.intake.quarantine import Quarantine
from controller.intake.settings import (
    DicomFolderIntake,
    DicomScpIntake,
    ImageLimits,
    InProcessIntake,
    Intake,
    WatchFolderIntake,
    source_name,
)
from controller.intake.threat_report import DicomReferences, ThreatReportWriter

IntakeSource = InProcessScanner | FolderSource | DicomStorageScp


@dataclass(frozen=True)
class SourceContext:
    """What an image source's factory gets: the matcher it delivers to, the DICOM references
    threat reports need, the clock, where its settings sit in the site file, and the image
    limits (``intake.limits``) every decoding source must check before it decodes."""

    matcher: ImageMatcher
    references: DicomReferences
    clock: Clock | None = None
    where: str = "intake.sources"
    limits: ImageLimits = DEFAULT_LIMITS


SourceFactory = Callable[[BaseModel, SourceContext], object]


class IntakeParts:
    """The matcher and every source built from :class:`Intake` settings."""

    def __init__(
        self,
        matcher: ImageMatcher,
        sources: dict[str, object],
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
    source_factory: SourceFactory | None = None,
) -> IntakeParts:
    """Build the matcher, each source, and (if configured) the threat report writer.

    Run ``parts.matcher.run()`` and each ``source.run()`` as tasks; register
    ``parts.reports`` with the inference service (``service.listeners.append``).
    """
    matcher = ImageMatcher(
        Quarantine(settings.quarantine),
        clock=clock,
        hold_s=settings.hold_s,
        max_held=settings.max_held,
        alarms=alarms,
    )
    references = DicomReferences()
    build = source_factory or builtin_source
    sources = {
        source_name(s): build(
            s, SourceContext(matcher, references, clock, f"intake.sources.{i}", settings.limits)
        )
        for i, s in enumerate(settings.sources)
    }
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
    limits: ImageLimits = DEFAULT_LIMITS,
) -> IntakeSource:
    """One of this package's intake sources from its settings."""
    ctx = SourceContext(matcher, references or DicomReferences(), clock, limits=limits)
    if isinstance(settings, InProcessIntake):
        return inprocess_source(settings, ctx)
    if isinstance(settings, WatchFolderIntake | DicomFolderIntake):
        return folder_source(settings, ctx)
    return dicom_scp_source(settings, ctx)


def builtin_source(settings: BaseModel, ctx: SourceContext) -> IntakeSource:
    """This package's factory for ``settings``' type (intake built without a registry)."""
    if isinstance(settings, InProcessIntake):
        return inprocess_source(settings, ctx)
    if isinstance(settings, WatchFolderIntake | DicomFolderIntake):
        return folder_source(settings, ctx)
    if isinstance(settings, DicomScpIntake):
        return dicom_scp_source(settings, ctx)
    raise ConfigError(
        "intake",
        [(f"{ctx.where}.type", repr(getattr(settings, "type", "?")), "not an intake source")],
    )


def inprocess_source(settings: InProcessIntake, ctx: SourceContext) -> InProcessScanner:
    """Registry factory of ``type: inprocess``: images pushed in by the twin or a stand-in."""
    return InProcessScanner(ctx.matcher, line=settings.line, clock=ctx.clock, name=settings.name)


def folder_source(
    settings: WatchFolderIntake | DicomFolderIntake, ctx: SourceContext
) -> FolderSource:
    """Registry factory of ``type: watch_folder`` and ``type: dicom_folder``."""
    dicom = isinstance(settings, DicomFolderIntake)
    return FolderSource(
        settings.path,
        ctx.matcher,
        decoder(dicom, ctx.limits),
        patterns=settings.patterns,
        poll_s=settings.poll_s,
        settle_s=settings.settle_s,
        line=settings.line,
        name=settings.name,
        references=ctx.references if dicom else None,
        clock=ctx.clock,
    )


def dicom_scp_source(settings: DicomScpIntake, ctx: SourceContext) -> DicomStorageScp:
    """Registry factory of ``type: dicom_scp``: a DICOM Storage SCP scanners push to."""
    return DicomStorageScp(
        ctx.matcher,
        ae_title=settings.ae_title,
        port=settings.port,
        bind=settings.bind,
        allowed_calling_aes=settings.allowed_calling_aes,
        line=settings.line,
        name=settings.name,
        references=ctx.references,
        clock=ctx.clock,
        limits=ctx.limits,
    )
