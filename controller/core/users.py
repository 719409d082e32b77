"""Who may use the console, and in which role.

Roles are fixed by the floor's trades: a **viewer** watches; an **operator** runs the lines
(acknowledges alarms, places and lifts holds, closes a parcel found off the belt); an
**officer** reviews images and records inspections (and holds); a **supervisor** does both and
searches the audit; an **admin** also manages users. What each role may do is stated once,
in :data:`PERMISSIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW = "view"
    ACKNOWLEDGE = "acknowledge"  # alarms
    HOLD = "hold"  # place and lift holds
    CLOSE = "close"  # close a parcel as exception
    REVIEW = "review"  # on-screen verdicts
    INSPECT = "inspect"  # inspection outcomes
    AUDIT = "audit"  # search and export the audit trail
    USERS = "users"


_OPERATOR = {Permission.VIEW, Permission.ACKNOWLEDGE, Permission.HOLD, Permission.CLOSE}
_OFFICER = {Permission.VIEW, Permission.HOLD, Permission.REVIEW, Permission.INSPECT}
_SUPERVISOR = _OPERATOR | _OFFICER | {Permission.AUDIT}

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.OFFICER: frozenset(_OFFICER),
    Role.SUPERVISOR: frozenset(_SUPERVISOR),
    Role.ADMIN: frozenset(_SUPERVISOR | {Permission.USERS}),
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str
    """An argon2 hash in PHC string form; never the password."""
    active: bool = True

    def may(self, permission: Permission) -> bool:
        return self.active and permission in PERMISSIONS[self.role]


class UserDirectory(Protocol):
    """The site's users, kept in the site's database."""

    async def get(self, name: str) -> User | None: ...

    async def save(self, user: User) -> None:
        """Add the user, or replace the one of that name."""
        ...

    async def all(self) -> list[User]: ...
