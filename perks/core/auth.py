"""Session tokens and the principal behind a request."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import jwt

from perks.core.errors import NotFound, Unauthorized

SESSION_AUDIENCE = "perks:session"
SESSION_ISSUER = "perks"
SESSION_ALGORITHM = "HS256"
VERIFIED_TOKENS = 8192

STAFF_ROLES = frozenset({"admin", "operator", "auditor"})
MERCHANT_ROLES = frozenset({"manager", "cashier"})
ALL_ROLES = STAFF_ROLES | MERCHANT_ROLES | {"client"}

# Who may do what: every route, console page and service names one of these sets rather than spelling roles out.
# Every bank staff member reads the programme, its clients and its merchants; an auditor reads, never changes.
BANK_STAFF_READERS = STAFF_ROLES
BANK_STAFF_WRITERS = frozenset({"admin", "operator"})
BANK_ADMINS = frozenset({"admin"})
# The audit trail, the event stream (business data of the bank) and the staff accounts: administrators, and
# auditors, who read everything; not operators.
BANK_AUDIT_READERS = frozenset({"admin", "auditor"})
# What concerns one merchant is read by the bank's staff and by that merchant's manager (scope checked apart).
BANK_STAFF_AND_MANAGERS = STAFF_ROLES | {"manager"}
BANK_WRITERS_AND_MANAGERS = BANK_STAFF_WRITERS | {"manager"}
# Staff and merchant users: everyone with a password.
USERS = STAFF_ROLES | MERCHANT_ROLES
MERCHANT_MANAGERS = frozenset({"manager"})
CLIENTS = frozenset({"client"})
# A void as the bank: its writers over HTTP, and the command line (the system principal) besides.
BANK_WRITERS_AND_SYSTEM = BANK_STAFF_WRITERS | {"system"}
# Those who serve clients and confirm who they are see a client's name and phone unmasked; an auditor never does.
UNMASKED_CLIENT_VIEWERS = BANK_STAFF_WRITERS


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a staff or merchant user, or a client."""

    id: str
    role: str
    username: str | None = None
    merchant_id: str | None = None
    store_id: str | None = None
    # The user's (or client's) session generation when the token was issued: a disable, a password change or a
    # block bumps the stored one, and every older token is refused.
    session_generation: int = 0

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def audit_actor(self) -> dict[str, Any]:
        """How this principal is named in the audit log."""
        return {"id": self.id, "username": self.username or f"client:{self.id}", "role": self.role}


# The command line acts as the system itself; the audit log names it so.
SYSTEM = Principal(id="", role="system", username="system")


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from PERKS_SECRET (so purposes never share a key)."""
    return hmac.new(secret.encode(), f"perks/{purpose}/v1".encode(), hashlib.sha256).digest()


class SessionTokens:
    """Issues and checks session tokens: HS256 JWTs with their own key and audience."""

    def __init__(self, secret: str) -> None:
        self._key = derive_key(secret, "session-tokens")
        # Checking an HS256 token costs tens of microseconds of Python a request; a terminal sends the same one
        # all day. A refused token raises, so it is never kept.
        self._checked = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._read)

    def issue(self, principal: Principal, now: datetime, ttl_seconds: int) -> str:
        """A signed session token for ``principal`` valid for ``ttl_seconds``."""
        claims: dict[str, Any] = {
            "iss": SESSION_ISSUER,
            "aud": SESSION_AUDIENCE,
            "typ": "session",
            "sub": principal.id,
            "role": principal.role,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
            "jti": secrets.token_urlsafe(9),
            "gen": principal.session_generation,
        }
        if principal.username:
            claims["usr"] = principal.username
        if principal.merchant_id:
            claims["mid"] = principal.merchant_id
        if principal.store_id:
            claims["sid"] = principal.store_id
        return jwt.encode(claims, self._key, algorithm=SESSION_ALGORITHM)

    def verify(self, token: str, now: datetime) -> Principal:
        """The principal of a valid session token; 401 for anything else.

        A token's signature and claims are checked once and remembered (a bounded cache keyed by the token
        itself: only a token that passed is kept); its expiry is checked on every call, and revocation is the
        session check's, against the database."""
        principal, expires = self._checked(token)
        if expires <= now.timestamp():
            raise Unauthorized()
        return principal

    def _read(self, token: str) -> tuple[Principal, int]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[SESSION_ALGORITHM],
                audience=SESSION_AUDIENCE,
                issuer=SESSION_ISSUER,
                # Expiry is checked by verify against the service's clock, not the machine's.
                options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized() from exc
        if claims.get("typ") != "session" or claims.get("role") not in ALL_ROLES:
            raise Unauthorized()
        expires = claims["exp"]
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise Unauthorized()
        generation = claims.get("gen", 0)
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise Unauthorized()
        principal = Principal(
            id=str(claims["sub"]),
            role=claims["role"],
            username=claims.get("usr"),
            merchant_id=claims.get("mid"),
            store_id=claims.get("sid"),
            session_generation=generation,
        )
        return principal, expires


# The session check: one primary-key lookup of the principal's current generation and status. A token is current
# only while its `gen` equals the stored generation and the account is active.
SELECT_USER_SESSION = "SELECT session_generation, status = 'active' AS active FROM users WHERE id = $1"
SELECT_CLIENT_SESSION = "SELECT session_generation, status = 'active' AS active FROM clients WHERE id = $1"


async def session_is_current(db: asyncpg.Pool | asyncpg.Connection, principal: Principal) -> bool:
    """Whether ``principal``'s session has not been revoked (disabled, blocked, password changed, logged out)."""
    try:
        principal_id = UUID(principal.id)
    except ValueError:
        return False
    query = SELECT_CLIENT_SESSION if principal.role == "client" else SELECT_USER_SESSION
    row = await db.fetchrow(query, principal_id)
    return row is not None and row["active"] and row["session_generation"] == principal.session_generation


def ensure_merchant_scope(actor: Principal, merchant_id: Any) -> None:
    """A merchant user reaches only its own merchant: another's is 404, as if it did not exist."""
    if actor.role in MERCHANT_ROLES and actor.merchant_id != str(merchant_id):
        raise NotFound()
