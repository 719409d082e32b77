"""The publisher's durable place in the journal: a small JSON file beside it.

Kept out of the journal's own file, so the publisher only ever reads the journal and never
takes its write lock (it cannot delay a journal commit). Per broker target, the file holds
``last_seq``, the highest ``seq`` the broker acknowledged together with every ``seq`` before
it; ``alarms``, the retained alarm topics set as of ``last_seq`` with their payloads (to
republish them to a broker that lost them, and to clear those a restart leaves behind); and
``journal``, the hash of the journal's first row, so that a journal made anew is published
from its start instead of being skipped up to an old watermark.

Written atomically: a new file is fsynced, renamed over the old one, and the folder fsynced.
A file that cannot be read counts as none: the journal is published again from its first row
(consumers deduplicate by ``(site, seq)``), so nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

FORMAT: Final = 1


def progress_path_for(journal_path: Path) -> Path:
    """Where the publisher of ``journal_path`` keeps its progress: ``journal.events.json``
    beside ``journal.sqlite``."""
    return journal_path.with_suffix(".events.json")


@dataclass(frozen=True, slots=True)
class Progress:
    last_seq: int = 0
    alarms: Mapping[str, str] = field(default_factory=dict)
    """Retained alarm topic -> its payload (JSON text), as of ``last_seq``."""
    journal: str | None = None
    """The hash of the journal's first row, once published."""


class ProgressFile:
    """The progress of one target (a broker and topic prefix) in a file that may hold
    others'. Blocking: call it from a worker thread."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._others: dict[str, Any] = {}
        self._saved_seq = 0
        self._lock = threading.Lock()

    def load(self) -> Progress:
        """This target's progress; a fresh start when the file is missing or unreadable."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            targets = document["targets"]
            if document.get("format") != FORMAT or not isinstance(targets, dict):
                raise ValueError(f"not a format {FORMAT} progress file")
            mine = targets.get(self.target)
            progress = Progress() if mine is None else _progress(mine)
        except FileNotFoundError:
            return Progress()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "event progress %s unreadable (%s); publishing the journal from its first row",
                self.path,
                exc,
            )
            return Progress()
        self._others = {k: v for k, v in targets.items() if k != self.target}
        self._saved_seq = progress.last_seq
        return progress

    def save(self, progress: Progress) -> None:
        """Write ``progress`` durably; one behind what is already saved is ignored (a copy
        cut off mid-way finishing late must not move the watermark back)."""
        with self._lock:
            if progress.last_seq < self._saved_seq:
                return
            document = {
                "format": FORMAT,
                "targets": {
                    **self._others,
                    self.target: {
                        "last_seq": progress.last_seq,
                        "alarms": dict(progress.alarms),
                        "journal": progress.journal,
                        "updated_at": datetime.now(UTC).isoformat(),
                    },
                },
            }
            _write_atomically(self.path, json.dumps(document, indent=1).encode())
            self._saved_seq = progress.last_seq

    def reset(self) -> None:
        """Let the next save start again from zero (the file belongs to another journal)."""
        with self._lock:
            self._saved_seq = 0


def _progress(raw: Mapping[str, Any]) -> Progress:
    last_seq, alarms, journal = raw["last_seq"], raw.get("alarms", {}), raw.get("journal")
    if not isinstance(last_seq, int) or last_seq < 0:
        raise ValueError(f"last_seq {last_seq!r} is not a sequence number")
    if not isinstance(alarms, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in alarms.items()
    ):
        raise ValueError("alarms is not a mapping of topics to payloads")
    if journal is not None and not isinstance(journal, str):
        raise ValueError(f"journal {journal!r} is not a hash")
    return Progress(last_seq, alarms, journal)


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
