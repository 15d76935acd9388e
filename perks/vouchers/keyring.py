"""The voucher signing keys a process holds: sign with the active one, verify with any still-live one, publish the JWKS.

Verification trusts only this ring: nothing in a token (``jku``, ``x5u``, ``jwk``) is ever fetched or used as a key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.utils import base64url_decode, base64url_encode

from perks.core.clock import Clock
from perks.core.errors import DatabaseUnavailable, Refusal

ALGORITHM = "EdDSA"
# The byte capacity of a version-10 QR code at error correction M: a voucher never exceeds it.
MAX_TOKEN_CHARS = 213
CLAIMS = frozenset({"jti", "iat", "exp"})
HEADER = frozenset({"alg", "kid"})
JTI_PATTERN = re.compile(r"[A-Za-z0-9_-]{16}")
SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# exp and iat are Unix seconds; anything outside these bounds is not ours (and not a sane date).
MAX_TIMESTAMP = 2**40


@dataclass(frozen=True)
class VoucherClaims:
    """What a genuine voucher says: its id, when it was issued, when it expires, and the key that signed it."""

    jti: str
    iat: int
    exp: int
    kid: str


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key. It signs from ``activates_at`` until ``retired_at`` (None: until the next rotation); the
    private half is loaded only while it signs or will; ``usable_until`` (retired keys only) ends its publication."""

    kid: str
    public_key: Ed25519PublicKey
    private_key: Ed25519PrivateKey | None
    created_at: datetime
    retired_at: datetime | None = None
    usable_until: datetime | None = None
    activates_at: datetime | None = None  # None: since it was created

    @property
    def active(self) -> bool:
        """Whether this is the newest key: the one that signs now or, pre-published, soon."""
        return self.retired_at is None

    @property
    def starts_signing_at(self) -> datetime:
        """When new vouchers start being signed with this key (a rotation retires its predecessor at that instant)."""
        return self.activates_at or self.created_at

    def live_at(self, now: datetime) -> bool:
        """Whether vouchers signed with this key may still be live at ``now``."""
        return self.usable_until is None or now < self.usable_until

    def jwk(self) -> dict[str, str]:
        """The public half as a JSON Web Key (RFC 8037)."""
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": base64url_encode(raw).decode(), "kid": self.kid,
                "alg": ALGORITHM, "use": "sig"}


def _invalid() -> Refusal:
    return Refusal("invalid_token")


def _canonical(segment: str) -> bool:
    # Two spellings of the same bytes (non-zero padding bits) would give one voucher two token strings.
    if not SEGMENT_PATTERN.fullmatch(segment):
        return False
    try:
        return base64url_encode(base64url_decode(segment)).decode() == segment
    except (ValueError, TypeError):
        return False


def _timestamp(value: Any) -> bool:
    return type(value) is int and 0 < value < MAX_TIMESTAMP


class KeyRing:
    """The signing keys of this process, replaced as a whole when the database says they changed."""

    def __init__(self, clock: Clock, keys: Iterable[SigningKey] | None = None) -> None:
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._signers: list[SigningKey] = []
        self.loaded = False
        if keys is not None:
            self.replace(keys)

    def replace(self, keys: Iterable[SigningKey]) -> None:
        """Swap in a freshly loaded set of keys (one assignment each, so readers never see half a ring)."""
        by_kid = {key.kid: key for key in keys}
        # Newest first: during a pre-publication both the old and the new key hold a private half.
        self._signers = sorted((key for key in by_kid.values() if key.private_key is not None),
                               key=lambda key: key.starts_signing_at, reverse=True)
        self._keys = by_kid
        self.loaded = True

    def _signer(self) -> SigningKey | None:
        # Chosen by the clock at each signature, so a pre-published key starts signing at its instant in every
        # process at once, with no reload needed.
        # A clock set before every activation (tests replaying the past) gets the earliest key.
        now = self._clock.now()
        started = (key for key in self._signers if key.starts_signing_at <= now)
        return next(started, self._signers[-1] if self._signers else None)

    @property
    def active_kid(self) -> str | None:
        """The kid new vouchers are signed with now."""
        key = self._signer()
        return key.kid if key else None

    def kids(self) -> list[str]:
        """Every kid whose vouchers may still be live, oldest first."""
        now = self._clock.now()
        keys = sorted(self._keys.values(), key=lambda key: key.created_at)
        return [key.kid for key in keys if key.live_at(now)]

    def sign(self, jti: str, iat: int, exp: int) -> tuple[str, str]:
        """``(token, kid)``: a voucher with exactly these claims, signed with the active key."""
        key = self._signer()
        if key is None or key.private_key is None:
            # Only before the first successful load from the database (see setup.KeyWatcher).
            raise DatabaseUnavailable()
        if not JTI_PATTERN.fullmatch(jti) or not (_timestamp(iat) and _timestamp(exp) and exp > iat):
            raise ValueError("a voucher needs a 16-character jti and exp after iat")
        token = jwt.encode(
            {"jti": jti, "iat": iat, "exp": exp},
            key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": None},
        )
        assert len(token) <= MAX_TOKEN_CHARS, f"voucher of {len(token)} characters does not fit a version-10 QR"
        return token, key.kid

    def verify(self, token: str) -> VoucherClaims:
        """The claims of a genuine voucher of ours; ``invalid_token`` for anything else. Expiry is NOT checked."""
        if not self.loaded:
            raise DatabaseUnavailable()
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        segments = token.split(".")
        if len(segments) != 3 or not all(_canonical(segment) for segment in segments):
            raise _invalid()
        try:
            header = json.loads(base64url_decode(segments[0]))
        except (ValueError, TypeError):
            raise _invalid() from None
        # Exactly {alg, kid}: no typ (a session token has one), nothing that names a key elsewhere.
        if not isinstance(header, dict) or set(header) != HEADER or header["alg"] != ALGORITHM:
            raise _invalid()
        kid = header["kid"]
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None or not key.live_at(self._clock.now()):
            raise _invalid()
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                options={
                    "require": ["exp", "iat", "jti"],
                    # The redeemer checks exp against the service's clock, after merchant_suspended.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid() from None
        if set(claims) != CLAIMS:
            raise _invalid()
        jti, iat, exp = claims["jti"], claims["iat"], claims["exp"]
        if not (isinstance(jti, str) and JTI_PATTERN.fullmatch(jti) and _timestamp(iat) and _timestamp(exp) and exp > iat):
            raise _invalid()
        return VoucherClaims(jti=jti, iat=iat, exp=exp, kid=kid)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of every key whose vouchers may still be live."""
        if not self.loaded:
            # An empty set would be cached by verifiers as "no valid voucher exists".
            raise DatabaseUnavailable()
        now = self._clock.now()
        keys = sorted(self._keys.values(), key=lambda key: key.created_at)
        return {"keys": [key.jwk() for key in keys if key.live_at(now)]}
