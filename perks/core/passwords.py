"""Password hashing with argon2, run off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified when a username is unknown, so that a miss costs as long as a hit.
_DUMMY_HASH = _hasher.hash("perks-timing-equaliser")

# argon2 releases the GIL, but each hash keeps four threads (its lanes) busy for tens of milliseconds: on a small
# machine the operating system then leaves the event loop's thread waiting for a core. One hashing thread per
# process, at a low priority (nice 10: a tenth of the loop's weight; its lanes inherit it), lets the loop take a
# core back at once; logins queue behind each other instead, and under a full load they wait, not redemptions.
HASH_THREADS = 1
HASH_NICE = 10


def _lower_priority() -> None:
    # On Linux a nice value belongs to a thread; elsewhere this may renice the whole process, so only on Linux.
    if hasattr(threading, "get_native_id") and os.uname().sysname == "Linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


_executor = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="perks-argon2",
                               initializer=_lower_priority)


def hash_password_sync(password: str) -> str:
    """The argon2id hash of ``password`` (blocking; prefer :func:`hash_password`)."""
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, computed in the low-priority hashing thread."""
    return await asyncio.get_running_loop().run_in_executor(_executor, _hasher.hash, password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; ``None`` (no such user) never matches."""
    return await asyncio.get_running_loop().run_in_executor(_executor, _verify, password_hash, password)
