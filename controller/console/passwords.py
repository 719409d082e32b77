"""Console passwords: argon2id hashes in PHC string form, and the one rule on length.

Only hashes are stored (:class:`controller.core.users.User.password_hash`). Hashing and
verifying are deliberately slow (tens of milliseconds, 64 MiB): call them from a worker
thread, never on the event loop. A login for a name nobody has must cost what a wrong
password costs, or the time taken tells an attacker which names exist: use
:func:`dummy_verify` there. Imports the standard library and argon2 only.
"""

from __future__ import annotations

import contextlib
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

MIN_PASSWORD_LENGTH = 10
"""Characters. Length is what makes a password hard to guess; no other rules."""

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 defaults


def hash_password(password: str) -> str:
    """A fresh argon2id hash of ``password`` (random salt), in PHC string form."""
    return _hasher.hash(password)


def verify_password(user_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``user_hash``. False on a mismatch or a malformed hash:
    a login never fails with an error because a stored hash is damaged, and a hash that
    cannot even be parsed still costs the time of a verification."""
    try:
        return _hasher.verify(user_hash, password)
    except Argon2Error:  # a mismatch, or a hash argon2 refused while verifying
        return False
    except (ValueError, TypeError):  # InvalidHashError: refused before any work was done
        return dummy_verify(password)


def needs_rehash(h: str) -> bool:
    """Whether ``h`` was made with other parameters than :func:`hash_password` uses now, so
    it should be replaced after the next successful login. True for a malformed hash."""
    try:
        return _hasher.check_needs_rehash(h)
    except (ValueError, TypeError):  # InvalidHashError and non-text
        return True


def check_password_strength(password: str) -> str | None:
    """None when ``password`` may be used, else what is wrong with it, for a person."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password is too short: {len(password)} characters, "
            f"at least {MIN_PASSWORD_LENGTH} are needed"
        )
    return None


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password nobody knows, made with the current parameters."""
    return hash_password(secrets.token_urlsafe(24))


def dummy_verify(password: str) -> bool:
    """Spend the time of one verification and return False: for a user name that does not
    exist (or has no usable hash), so it cannot be told from a wrong password by timing."""
    with contextlib.suppress(Argon2Error, ValueError, TypeError):  # ValueError: a surrogate
        _hasher.verify(_dummy_hash(), password)
    return False
