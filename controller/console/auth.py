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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
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
    credential: str = ""
    """The user's role, state and password hash when logged in (see :func:`_fingerprint`)."""

    @property
    def permissions(self) -> list[Permission]:
        return sorted(PERMISSIONS[self.role])

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]


CLIENT_FACTOR = 10
"""A client address may fail this many times more than one account from one address:
several consoles may share an address (a proxy, a NAT), and guessing an account is what
the limit is for."""
LIMITER_KEYS = 10_000
"""At most this many user/address keys are remembered; the oldest are forgotten first."""
VERIFY_AT_ONCE = 2
"""Password checks running at once (argon2 takes ~64 MiB and tens of milliseconds each)."""
VERIFY_QUEUE = 16
"""Logins that may wait for a check; more are answered 503 at once."""


@dataclass
class LoginLimiter:
    """At most ``per_min`` failed logins per account from one client address, and
    ``CLIENT_FACTOR`` times that per address, in any minute. Keyed per account *and*
    address, so nobody elsewhere can lock an officer out by failing on purpose."""

    per_min: int
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def keys(self, user: str, client: str) -> tuple[str, str]:
        return f"user:{user}@{client}", f"client:{client}"

    def blocked(self, *keys: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(self._recent(key, now) >= self._limit(key) for key in keys)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in keys:
            failures = self._failures.pop(key, None) or deque()
            failures.append(now)
            self._failures[key] = failures  # newest last
        while len(self._failures) > LIMITER_KEYS:
            self._failures.popitem(last=False)

    def refund(self, *keys: str) -> None:
        """Take back the newest failure of each key (a login counted as failed before its
        check, which then succeeded)."""
        for key in keys:
            failures = self._failures.get(key)
            if failures:
                failures.pop()

    def _limit(self, key: str) -> int:
        return self.per_min * (CLIENT_FACTOR if key.startswith("client:") else 1)

    def _recent(self, key: str, now: float) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        while failures and failures[0] <= now - 60.0:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return 0
        return len(failures)


class Sessions:
    """Open logins by token, each ending after ``lifetime``; a restart logs everyone out.

    A session is checked against the user directory at most every ``recheck_s``: a user
    disabled, given another role or a new password loses the session within that time.
    """

    def __init__(
        self,
        users: UserDirectory,
        lifetime: timedelta,
        limiter: LoginLimiter,
        recheck_s: float = 5.0,
    ) -> None:
        self.users = users
        self.lifetime = lifetime
        self.limiter = limiter
        self.recheck_s = recheck_s
        self._open: dict[str, Session] = {}
        self._checked: dict[str, float] = {}
        self._verifying = asyncio.Semaphore(VERIFY_AT_ONCE)
        self._waiting = 0
        self._pool = ThreadPoolExecutor(VERIFY_AT_ONCE, thread_name_prefix="cargogate-login")

    async def login(self, name: str, password: str, client: str) -> Session:
        """A new session, or HTTPException 401 (bad credentials), 429 (too many tries) or
        503 (too many logins at once). The try counts as failed before the check, so
        concurrent tries cannot pass the limit together."""
        keys = self.limiter.keys(name, client)
        if self.limiter.blocked(*keys):
            raise HTTPException(429, "too many failed logins: wait a minute and try again")
        if self._waiting >= VERIFY_QUEUE:
            raise HTTPException(503, "too many logins at once: try again in a moment")
        self.limiter.failed(*keys)
        self._waiting += 1
        try:
            async with self._verifying:
                user = await self.users.get(name)
                ok = await self._password_ok(user, password)
        finally:
            self._waiting -= 1
        if not ok or user is None:
            raise HTTPException(401, "unknown user or wrong password")
        self.limiter.refund(*keys)
        self._expire()
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user.name,
            role=user.role,
            csrf=secrets.token_urlsafe(24),
            expires_at=datetime.now(UTC) + self.lifetime,
            credential=_fingerprint(user),
        )
        self._open[session.token] = session
        self._checked[session.token] = time.monotonic()
        return session

    async def get(self, token: str | None) -> Session | None:
        """The open session of ``token``, still valid for its user as the directory says."""
        session = self.peek(token)
        if session is None:
            return None
        if time.monotonic() - self._checked.get(session.token, 0.0) >= self.recheck_s:
            user = await self.users.get(session.user)
            if user is None or _fingerprint(user) != session.credential:
                self.logout(session.token)
                return None
            self._checked[session.token] = time.monotonic()
        return session

    def peek(self, token: str | None) -> Session | None:
        """The open, unexpired session of ``token`` as last checked (no directory read)."""
        session = self._open.get(token) if token else None
        if session is not None and session.expires_at <= datetime.now(UTC):
            self.logout(session.token)
            return None
        return session

    def logout(self, token: str | None) -> None:
        if token:
            self._open.pop(token, None)
            self._checked.pop(token, None)

    def _expire(self) -> None:
        now = datetime.now(UTC)
        for token in [t for t, s in self._open.items() if s.expires_at <= now]:
            self.logout(token)

    async def _password_ok(self, user: User | None, password: str) -> bool:
        """Check in the login pool, off the loop and off the pool the intake and feeds use;
        an unknown or disabled user costs the same time as a wrong password."""
        loop = asyncio.get_running_loop()
        if user is None or not user.active:
            await loop.run_in_executor(self._pool, dummy_verify, password)
            return False
        return await loop.run_in_executor(self._pool, verify_password, user.password_hash, password)


def _fingerprint(user: User) -> str:
    """What a session was granted on: the role, whether active, and the password hash."""
    return f"{user.role}|{user.active}|{user.password_hash}"


def requires(permission: Permission) -> Callable[[Request], Awaitable[Session]]:
    """A FastAPI dependency: the request's session, if it may do ``permission``.

    401 without a valid session, 403 when the role lacks the permission or when a request
    that changes something lacks the session's CSRF token.
    """

    async def dependency(request: Request) -> Session:
        sessions: Sessions = request.app.state.ctx.sessions
        session = await sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise HTTPException(401, "log in first")
        if request.method not in _SAFE_METHODS and not secrets.compare_digest(
            request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()
        ):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        if not session.may(permission):
            raise HTTPException(
                403, f"a {session.role} may not {permission.value}: ask a supervisor"
            )
        return session

    return dependency
