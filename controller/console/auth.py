"""Logins, sessions, roles and CSRF for the console.

A login checks the user's argon2 hash and opens a server-side session: the browser holds
only a random token in an HttpOnly, SameSite=Strict cookie (Secure over TLS). Every request
that changes something must also carry the session's CSRF token in ``X-CSRF-Token``, which
a page from another origin cannot read. Failed logins are limited per user name and per
client address. What each role may do is :data:`controller.core.users.PERMISSIONS`; the API
refuses with 403 whatever the page shows.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException, Request

from controller.console.passwords import dummy_verify, verify_password
from controller.core.users import PERMISSIONS, Permission, Role, User, UserDirectory

COOKIE = "cargogate_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    expires_at: datetime

    @property
    def permissions(self) -> list[Permission]:
        return sorted(PERMISSIONS[self.role])

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]


CLIENT_FACTOR = 10
"""A client address may fail this many times more than one user name: several consoles on
the floor may share an address, and guessing one account is what the limit is for."""


@dataclass
class LoginLimiter:
    """At most ``per_min`` failed logins per user name, and ``CLIENT_FACTOR`` times that per
    client address, in any minute."""

    per_min: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, *keys: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(len(self._recent(key, now)) >= self._limit(key) for key in keys)

    def _limit(self, key: str) -> int:
        return self.per_min * (CLIENT_FACTOR if key.startswith("client:") else 1)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in keys:
            self._recent(key, now).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - 60.0:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)  # forget quiet keys: bounded by the attackers' rate
            failures = self._failures.setdefault(key, deque())
        return failures


class Sessions:
    """Open logins by token, each ending after ``lifetime``; a restart logs everyone out."""

    def __init__(self, users: UserDirectory, lifetime: timedelta, limiter: LoginLimiter) -> None:
        self.users = users
        self.lifetime = lifetime
        self.limiter = limiter
        self._open: dict[str, Session] = {}

    async def login(self, name: str, password: str, client: str) -> Session:
        """A new session, or HTTPException 401 (bad credentials) / 429 (too many tries)."""
        keys = (f"user:{name}", f"client:{client}")
        if self.limiter.blocked(*keys):
            raise HTTPException(429, "too many failed logins: wait a minute and try again")
        user = await self.users.get(name)
        if not await _password_ok(user, password):
            self.limiter.failed(*keys)
            raise HTTPException(401, "unknown user or wrong password")
        assert user is not None  # _password_ok said so
        self._expire()
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user.name,
            role=user.role,
            csrf=secrets.token_urlsafe(24),
            expires_at=datetime.now(UTC) + self.lifetime,
        )
        self._open[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        session = self._open.get(token) if token else None
        if session is not None and session.expires_at <= datetime.now(UTC):
            del self._open[session.token]
            return None
        return session

    def logout(self, token: str | None) -> None:
        if token:
            self._open.pop(token, None)

    def _expire(self) -> None:
        now = datetime.now(UTC)
        for token in [t for t, s in self._open.items() if s.expires_at <= now]:
            del self._open[token]


async def _password_ok(user: User | None, password: str) -> bool:
    """Check off the loop (argon2 takes tens of milliseconds by design); an unknown or
    disabled user costs the same time as a wrong password."""
    if user is None or not user.active:
        await asyncio.to_thread(dummy_verify, password)
        return False
    return await asyncio.to_thread(verify_password, user.password_hash, password)


def requires(permission: Permission) -> Callable[[Request], Awaitable[Session]]:
    """A FastAPI dependency: the request's session, if it may do ``permission``.

    401 without a valid session, 403 when the role lacks the permission or when a request
    that changes something lacks the session's CSRF token.
    """

    async def dependency(request: Request) -> Session:
        sessions: Sessions = request.app.state.sessions
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise HTTPException(401, "log in first")
        if request.method not in _SAFE_METHODS and not secrets.compare_digest(
            request.headers.get(CSRF_HEADER, ""), session.csrf
        ):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        if not session.may(permission):
            raise HTTPException(
                403, f"a {session.role} may not {permission.value}: ask a supervisor"
            )
        return session

    return dependency
