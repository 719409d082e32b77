"""The site's console users, in the ``users`` table of its journal database.

:class:`SqlUserDirectory` is the :class:`controller.core.users.UserDirectory` of a site: the
console reads it on every login, ``cargogate user`` edits it. It lives beside the journal
(the local SQLite file, or a PostgreSQL database) so logging in never depends on the central
database being reachable. The database is migrated on first use, the way the journal does it,
so a fresh SQLite file works.

A row whose role this release does not know (written by a newer one, or by hand) never
breaks a login or a listing: it reads as an inactive viewer, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.core.users import Role, User
from controller.store import migrate
from controller.store.schema import users_table
from controller.store.sqlite import sqlite_engine, sqlite_url

log = logging.getLogger(__name__)

_ROLES: dict[str, Role] = {role.value: role for role in Role}


class UserExistsError(Exception):
    """:meth:`SqlUserDirectory.add_sync` found a user of that name already."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a user named {name!r} already exists")
        self.name = name


class UnknownUserError(LookupError):
    """No user of that name to change."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")
        self.name = name


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A row of ``users`` as stored: the role as written (perhaps one this release does not
    know, then ``user`` is an inactive viewer) and when the row was added and last changed."""

    user: User
    stored_role: str
    created_at: datetime
    changed_at: datetime

    @property
    def role_known(self) -> bool:
        return self.stored_role in _ROLES


def utc_now() -> datetime:
    return datetime.now(UTC)


class SqlUserDirectory:
    """The users of one site's database: a SQLite file (a Path or a ``sqlite:///`` URL) or a
    PostgreSQL URL.

    The ``*_sync`` methods block (the CLI calls them directly); the async methods of
    :class:`~controller.core.users.UserDirectory` run them in a worker thread. The engine is
    made, and the database migrated, on first use; :meth:`close` releases the connections.
    """

    def __init__(self, source: str | Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        if isinstance(source, Path):
            self.url = sa.make_url(sqlite_url(source))
        else:
            self.url = sa.make_url(source if "://" in source else sqlite_url(Path(source)))
        backend = self.url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"users live in SQLite or PostgreSQL, not {backend!r}")
        self._clock = clock
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------------

    def _ready(self) -> sa.Engine:
        """The engine, made and the database migrated on first use (once, thread-safe)."""
        with self._lock:
            if self._engine is None:
                if self.url.get_backend_name() == "sqlite":
                    engine = sqlite_engine(self.url, create_parent=True)
                else:
                    engine = sa.create_engine(self.url, pool_pre_ping=True)
                try:
                    migrate.upgrade(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._engine = engine
            return self._engine

    def close(self) -> None:
        """Release the database connections; the next call opens them again."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _writing(self) -> sa.Engine:
        """The engine for a write: on SQLite it takes the write lock when the transaction
        starts, so it waits its turn behind the journal writer instead of failing mid-way."""
        engine = self._ready()
        if engine.dialect.name == "sqlite":
            return engine.execution_options(sqlite_begin="IMMEDIATE")
        return engine

    # --- UserDirectory ----------------------------------------------------------------------

    async def get(self, name: str) -> User | None:
        return await asyncio.to_thread(self.get_sync, name)

    async def save(self, user: User) -> None:
        """Add the user, or replace the one of that name."""
        await asyncio.to_thread(self.save_sync, user)

    async def all(self) -> list[User]:
        return await asyncio.to_thread(self.all_sync)

    # --- blocking helpers -------------------------------------------------------------------

    def record_sync(self, name: str) -> UserRecord | None:
        """The stored row of ``name``, or None. Blocking; for tools that show an unknown
        role as it is (no warning is logged)."""
        stmt = sa.select(users_table).where(users_table.c.name == name)
        with self._ready().connect() as conn:
            row = conn.execute(stmt).mappings().one_or_none()
        return None if row is None else _record(row)

    def records_sync(self) -> list[UserRecord]:
        """Every stored row, by name. Blocking."""
        stmt = sa.select(users_table).order_by(users_table.c.name)
        with self._ready().connect() as conn:
            return [_record(row) for row in conn.execute(stmt).mappings()]

    def get_sync(self, name: str) -> User | None:
        """The user ``name``, or None. Blocking; warns of a role it does not know."""
        record = self.record_sync(name)
        return None if record is None else _user(record)

    def all_sync(self) -> list[User]:
        """Every user, by name. Blocking; warns of each role it does not know."""
        return [_user(record) for record in self.records_sync()]

    def save_sync(self, user: User) -> None:
        """Add ``user`` or replace the one of that name (keeping when it was added). Blocking."""
        now = self._clock()
        engine = self._writing()
        values = _values(user, now)
        if engine.dialect.name == "postgresql":
            pg = postgresql.insert(users_table).values(values)
            stmt: sa.Executable = pg.on_conflict_do_update(
                index_elements=[users_table.c.name], set_=_changes(pg.excluded)
            )
        else:
            lite = sqlite.insert(users_table).values(values)
            stmt = lite.on_conflict_do_update(
                index_elements=[users_table.c.name], set_=_changes(lite.excluded)
            )
        with engine.begin() as conn:
            conn.execute(stmt)

    def add_sync(self, user: User) -> None:
        """Add ``user``; raise :class:`UserExistsError` if the name is taken. Blocking."""
        engine = self._writing()
        values = _values(user, self._clock())
        name = users_table.c.name
        if engine.dialect.name == "postgresql":
            pg = postgresql.insert(users_table).values(values)
            stmt: sa.Executable = pg.on_conflict_do_nothing().returning(name)
        else:
            lite = sqlite.insert(users_table).values(values)
            stmt = lite.on_conflict_do_nothing().returning(name)
        with engine.begin() as conn:  # RETURNING: psycopg's rowcount is -1 here
            if conn.execute(stmt).scalar_one_or_none() is None:
                raise UserExistsError(user.name)

    def update_sync(
        self,
        name: str,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
        active: bool | None = None,
    ) -> UserRecord:
        """Change what is given of ``name``'s row and return it as it is now; raise
        :class:`UnknownUserError` when there is no such user. Blocking."""
        changes: dict[str, Any] = {"changed_at": self._clock()}
        if role is not None:
            changes["role"] = Role(role).value
        if password_hash is not None:
            changes["password_hash"] = password_hash
        if active is not None:
            changes["active"] = active
        stmt = (
            sa.update(users_table)
            .where(users_table.c.name == name)
            .values(changes)
            .returning(*users_table.c)
        )
        with self._writing().begin() as conn:
            row = conn.execute(stmt).mappings().one_or_none()
        if row is None:
            raise UnknownUserError(name)
        return _record(row)


def _values(user: User, now: datetime) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": Role(user.role).value,
        "password_hash": user.password_hash,
        "active": user.active,
        "created_at": now,
        "changed_at": now,
    }


def _changes(excluded: Any) -> dict[str, Any]:
    """What an upsert overwrites: everything but the name and when the user was added."""
    return {
        "role": excluded.role,
        "password_hash": excluded.password_hash,
        "active": excluded.active,
        "changed_at": excluded.changed_at,
    }


def _record(row: sa.RowMapping) -> UserRecord:
    """The row as a record; an unknown role makes its ``user`` an inactive viewer."""
    name, stored_role = str(row["name"]), str(row["role"])
    role = _ROLES.get(stored_role)
    active = bool(row["active"]) and role is not None
    return UserRecord(
        user=User(
            name=name,
            role=Role.VIEWER if role is None else role,
            password_hash=str(row["password_hash"]),
            active=active,
        ),
        stored_role=stored_role,
        created_at=row["created_at"],
        changed_at=row["changed_at"],
    )


def _user(record: UserRecord) -> User:
    """The record's user, with a warning where its role is unknown (it cannot log in)."""
    if not record.role_known:
        log.warning(
            "user %r has the unknown role %r: treated as an inactive viewer; "
            "set a role with `cargogate user role`",
            record.user.name,
            record.stored_role,
        )
    return record.user
