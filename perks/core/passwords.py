"""Password hashing with argon2, run off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified when a username is unknown, so that a miss costs as long as a hit.
_DUMMY_HASH = _hasher.hash("perks-timing-equaliser")


def hash_password_sync(password: str) -> str:
    """The argon2id hash of ``password`` (blocking; prefer :func:`hash_password`)."""
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, computed in a worker thread."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; ``None`` (no such user) never matches."""
    return await asyncio.to_thread(_verify, password_hash, password)
