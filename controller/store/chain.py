"""The journal's hash chain: every row seals the one before it, so an edit leaves a trace.

Each site's rows form one chain in ``seq`` order. A sealed row stores ``prev_hash`` (the
``hash`` of the row before it) and ``hash``, the SHA-256 of :func:`canonical` of its audited
fields and ``prev_hash``. Editing a row breaks its own hash; deleting, inserting or swapping
rows breaks ``seq`` contiguity or the next ``prev_hash``; rewriting a whole tail consistently
needs every copy (the central database holds one) to be rewritten too.

The chain starts at :data:`GENESIS`: the first sealed row of a site has ``prev_hash`` equal
to it. On a journal created by this release that is ``seq`` 1. Rows written before the chain
existed (migration 0004) are *unsealed*, both columns null; they may only form a prefix of
a site's rows, and the first row after them is the one chained to genesis. Any other row
without a hash, or a second genesis link, is a break.

The canonical form (version 1) is the ASCII bytes of the compact JSON array::

    ["cargogate-journal-v1", site, seq, prev_hash, wall_time, ts, kind, line, tracking_id,
     hawb, state_from, state_to, destination, lane, reasons, policy_version, data]

written by ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)``: ``wall_time`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), ``ts`` a JSON
number (Python's shortest round-trip ``repr``), ``lane`` a number or null, ``reasons`` a list
of numbers and ``data`` the stored JSON object with its keys sorted. Every field reads back
identically from SQLite and PostgreSQL, so the central copy verifies with the same code.

:func:`verify` checks a journal database end to end; it opens it read-only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from controller.store.schema import forward_state_table, journal_table

FORMAT: Final = "cargogate-journal-v1"
GENESIS: Final = "0" * 64
"""The ``prev_hash`` of each site's first row (``seq`` 1)."""
CHUNK_ROWS: Final = 5_000
"""Rows read per query while verifying or chaining: memory stays flat on any journal."""
PG_CONNECT_TIMEOUT_S: Final = 10


_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical(row: Mapping[Any, Any]) -> bytes:
    """The bytes that ``hash`` covers for a journal row (see the module docstring)."""
    fields = [
        FORMAT,
        row["site"],
        row["seq"],
        row["prev_hash"],
        _utc_text(row["wall_time"]),
        row["ts"],
        row["kind"],
        row["line"],
        row["tracking_id"],
        row["hawb"],
        row["state_from"],
        row["state_to"],
        row["destination"],
        row["lane"],
        row["reasons"],
        row["policy_version"],
        row["data"],
    ]
    return _ENCODER.encode(fields).encode("ascii")


@functools.lru_cache(maxsize=16)
def _utc_text(wall_time: datetime) -> str:
    """``wall_time`` in the canonical form; cached, as a commit's rows share one wall time."""
    return wall_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(row: Mapping[Any, Any]) -> str:
    """The hex SHA-256 of :func:`canonical`: the ``hash`` a row with this ``prev_hash`` gets."""
    return hashlib.sha256(canonical(row)).hexdigest()


# --- verification --------------------------------------------------------------------------


class JournalSourceError(Exception):
    """The journal named cannot be read (no such file, a bad URL, an unreachable server, no
    chain yet); the message says which, in one line."""


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of a site's chain."""

    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class SiteChain:
    """One site's chain as verified: ``entries`` rows checked good, up to ``last_seq``, of
    which the first ``unsealed`` predate the chain (nothing vouches for them)."""

    site: str
    entries: int
    last_seq: int
    unsealed: int = 0
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_rows(site: str, rows: Iterable[Mapping[Any, Any]], shipped_to: int = 0) -> SiteChain:
    """Check one site's rows, in ``seq`` order, from ``seq`` 1; stop at the first break.

    ``shipped_to`` is a ``seq`` known to have been written (the forwarder's watermark): a
    journal that ends before it has lost its tail, which no hash could show by itself.
    """
    expected, prev, unsealed = 1, None, 0  # prev: None until the first sealed row
    for row in rows:
        seq = int(row["seq"])
        problem = _problem(row, seq, expected, prev)
        if problem is not None:
            broken = Break(min(seq, expected), problem)
            return SiteChain(site, expected - 1, expected - 1, unsealed, broken)
        if row["hash"] is None:
            unsealed += 1
        prev, expected = row["hash"], seq + 1
    last = expected - 1
    if shipped_to > last:
        problem = (
            f"missing: the journal ends at seq {last} but the forwarder shipped up to seq "
            f"{shipped_to} (the tail was removed)"
        )
        return SiteChain(site, last, last, unsealed, Break(expected, problem))
    return SiteChain(site, last, last, unsealed)


def _problem(row: Mapping[Any, Any], seq: int, expected: int, prev: str | None) -> str | None:
    """What is wrong with ``row`` where ``seq`` ``expected`` should follow a row whose hash
    is ``prev`` (None: no sealed row yet), or None."""
    if seq < expected:
        return "a row numbered before seq 1 (every site's journal starts at 1)"
    if seq > expected:
        return f"missing (the next row present is seq {seq})"
    if "unreadable" in row:
        return f"unreadable: {row['unreadable']}"
    digest, prev_hash = row["hash"], row["prev_hash"]
    if digest is None and prev_hash is None and prev is None:
        return None  # unsealed: written before the chain existed
    if digest is None:
        return "not sealed: the row has no hash"
    if prev_hash is None:
        return "not sealed: the row has no prev_hash"
    wanted = GENESIS if prev is None else prev
    if prev_hash != wanted:
        before = "the genesis value" if prev is None else f"the hash of seq {seq - 1}"
        return f"prev_hash does not match {before} (a row was removed, inserted or moved)"
    try:
        matches = entry_hash(row) == digest
    except (TypeError, ValueError, AttributeError) as exc:  # a value no writer stores
        return f"hash does not match the row's contents (the row was changed: {exc})"
    if not matches:
        return "hash does not match the row's contents (the row was changed)"
    return None


def verify(source: str | Path, site: str | None = None) -> list[SiteChain]:
    """Verify every site's chain in a journal database (one site with ``site``). Blocking.

    ``source`` is a SQLite file path or a database URL (``postgresql://`` means psycopg);
    the database is opened read-only. Raises :class:`JournalSourceError` when it cannot be
    read as a journal.
    """
    engine = _engine(source)
    try:
        with engine.connect() as conn:
            _check_schema(conn)
            sites = _sites(conn)
            # the forwarder's watermark is the one record of a local journal's length
            shipped = _shipped_to(conn) if len(sites) == 1 else 0
            chains = [
                verify_rows(s, _rows(conn, s), shipped if [s] == sites else 0)
                for s in ([site] if site is not None else sites)
            ]
    except sa.exc.SQLAlchemyError as exc:
        raise JournalSourceError(f"cannot read {shown(source)}: {first_line(exc)}") from exc
    finally:
        engine.dispose()
    return [
        SiteChain(c.site, 0, 0, 0, Break(1, "no entries for this site"))
        if site is not None and c.ok and c.entries == 0
        else c
        for c in chains
    ]


def _engine(source: str | Path) -> sa.Engine:
    text = str(source)
    if "://" not in text:
        path = Path(text)
        if not path.is_file():
            raise JournalSourceError(f"no journal database at {text!r}")
        uri = f"{path.resolve().as_uri()}?mode=ro"  # read-only: verifying changes nothing
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True),
            poolclass=sa.pool.NullPool,
        )
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise JournalSourceError(f"not a database URL: {shown(source)}") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _engine(url.database or "")
    if backend != "postgresql":
        raise JournalSourceError(f"unsupported database {backend!r}: a SQLite file or PostgreSQL")
    return sa.create_engine(
        url.set(drivername="postgresql+psycopg"),
        poolclass=sa.pool.NullPool,
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "options": "-c default_transaction_read_only=on",
        },
    )


def _check_schema(conn: sa.Connection) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(journal_table.name):
        raise JournalSourceError("no journal table there: not a CargoGate journal")
    columns = {c["name"] for c in inspector.get_columns(journal_table.name)}
    if not {"prev_hash", "hash"} <= columns:
        raise JournalSourceError(
            "this journal has no hash chain yet: open it once with this release (the journal "
            "or the forwarder migrates it), then verify"
        )


def _sites(conn: sa.Connection) -> list[str]:
    stmt = sa.select(journal_table.c.site).distinct().order_by(journal_table.c.site)
    return list(conn.execute(stmt).scalars())


def _shipped_to(conn: sa.Connection) -> int:
    """The highest forwarder watermark: a local journal (one site) has shipped that far."""
    stmt = sa.select(sa.func.max(forward_state_table.c.last_seq))
    return int(conn.execute(stmt).scalar_one_or_none() or 0)


def _rows(conn: sa.Connection, site: str) -> Iterator[Mapping[Any, Any]]:
    """One site's rows in ``seq`` order, a chunk per query (keyset on the primary key).

    A row whose stored JSON or time cannot be decoded (edited by hand) comes as
    ``{"seq": ..., "unreadable": why}``: it is found by reading its chunk row by row.
    """
    j = journal_table.c
    after = 0
    while True:
        stmt = sa.select(journal_table).where(j.site == site, j.seq > after).order_by(j.seq)
        try:
            chunk: list[Mapping[Any, Any]] = list(conn.execute(stmt.limit(CHUNK_ROWS)).mappings())
        except ValueError:
            chunk = _row_by_row(conn, site, after)
        yield from chunk
        if len(chunk) < CHUNK_ROWS or "unreadable" in chunk[-1]:
            return
        after = int(chunk[-1]["seq"])


def _row_by_row(conn: sa.Connection, site: str, after: int) -> list[Mapping[Any, Any]]:
    """The next chunk of rows one query each, ending at the first unreadable one."""
    j = journal_table.c
    seqs: list[int] = list(
        conn.execute(
            sa.select(j.seq).where(j.site == site, j.seq > after).order_by(j.seq).limit(CHUNK_ROWS)
        ).scalars()
    )
    rows: list[Mapping[Any, Any]] = []
    for seq in seqs:
        one = sa.select(journal_table).where(j.site == site, j.seq == seq)
        try:
            rows.append(conn.execute(one).mappings().one())
        except ValueError as exc:
            rows.append({"seq": seq, "unreadable": first_line(exc)})
            break
    return rows


def shown(source: str | Path) -> str:
    """``source`` fit for a message: a URL's password hidden."""
    text = str(source)
    if "://" not in text:
        return text
    try:
        return sa.make_url(text).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "(unparseable URL)"


def first_line(exc: BaseException) -> str:
    """The driver's first line of an error, without SQLAlchemy's boilerplate."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]
