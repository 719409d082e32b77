"""A full disk under the journal, for real as far as SQLite can tell, and freed again.

While the disk is full, every transaction on a connection to the journal file starts with
``PRAGMA max_page_count = 1``: a cap below the file's size holds the file to the pages it has,
so every write that needs a new page fails with SQLITE_FULL ("database or disk is full"),
exactly as on a full file system. Freeing lifts the cap on the next transaction. The hook is a
SQLAlchemy ``begin`` listener on every engine in this process (the controller must run in the
drill's process), matched on the journal's file name; it touches nothing else.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy import event

UNCAPPED = 2**31 - 2
"""SQLite's own ceiling for ``max_page_count``: no cap."""


class FullDisk:
    """Use as ``with FullDisk(journal) as disk``; ``disk.fill()`` and ``disk.free()``."""

    def __init__(self, journal: Path) -> None:
        self.database = str(journal)
        self.full = False
        self.refusals = 0
        """Transactions begun on the journal while it was full."""

    def fill(self) -> None:
        self.full = True

    def free(self) -> None:
        self.full = False

    def _on_begin(self, conn: sa.Connection) -> None:
        if conn.engine.url.database != self.database:
            return
        self.refusals += self.full
        conn.exec_driver_sql(f"PRAGMA max_page_count = {1 if self.full else UNCAPPED}")

    def __enter__(self) -> Self:
        event.listen(sa.Engine, "begin", self._on_begin)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event.remove(sa.Engine, "begin", self._on_begin)
