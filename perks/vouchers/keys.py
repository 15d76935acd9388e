"""Signing keys in the database: made, encrypted at rest, rotated, and loaded into a KeyRing.

The private half is stored encrypted with AES-GCM under a key derived from PERKS_SECRET (the kid is the
associated data, so a ciphertext cannot be moved to another row); the public half is stored raw.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from jwt.utils import base64url_encode

from perks.audit import service as audit
from perks.core.auth import SYSTEM, derive_key
from perks.core.config import Config
from perks.vouchers.keyring import SigningKey

# Every process LISTENs here; a rotation NOTIFYs it in its own transaction (delivered at commit).
CHANNEL = "perks_signing_keys"
# Serialises key creation and rotation across processes (distinct from the migrations' lock id).
KEYS_LOCK_ID = 7_265_733_210_002
# The redeemer's leeway past exp: a retired key stays published that much longer.
EXPIRY_LEEWAY_SECONDS = 10
# How long every process reads the signing keys again at the latest, should a NOTIFY be missed (setup.KeyWatcher).
RELOAD_EVERY_SECONDS = 30.0
# How long a verifier may cache the JWKS (its Cache-Control max-age).
JWKS_MAX_AGE_SECONDS = 60
# A rotation publishes the new key this long before it signs. A process that missed the NOTIFY has it within
# RELOAD_EVERY_SECONDS, and a verifier that fetched the JWKS from that process just before has it within
# JWKS_MAX_AGE_SECONDS more; the rest is a margin for clocks. So no one ever meets a voucher of a key it has not seen.
ROTATION_LEAD_SECONDS = 120
assert ROTATION_LEAD_SECONDS > RELOAD_EVERY_SECONDS + JWKS_MAX_AGE_SECONDS
NONCE_BYTES = 12


class KeyDecryptionError(Exception):
    """A stored private key cannot be decrypted: PERKS_SECRET is not the one it was stored under."""


def new_kid() -> str:
    """A fresh key id: 8 base64url characters (48 random bits)."""
    return base64url_encode(secrets.token_bytes(6)).decode()


def _cipher(config: Config) -> AESGCM:
    return AESGCM(derive_key(config.secret, "signing-keys"))


def encrypt_private_key(config: Config, kid: str, private_key: Ed25519PrivateKey) -> bytes:
    """``nonce || AES-GCM ciphertext`` of the raw private key, bound to ``kid``."""
    raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(config).encrypt(nonce, raw, kid.encode())


def decrypt_private_key(config: Config, kid: str, blob: bytes) -> Ed25519PrivateKey:
    """The private key stored as ``blob`` for ``kid``; :class:`KeyDecryptionError` under another secret."""
    try:
        raw = _cipher(config).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], kid.encode())
    except (InvalidTag, ValueError) as exc:
        raise KeyDecryptionError(f"signing key {kid} cannot be decrypted with this PERKS_SECRET") from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


LOCK_KEYS = "SELECT pg_advisory_xact_lock($1)"
SELECT_ACTIVE_KID = "SELECT kid FROM signing_keys WHERE retired_at IS NULL"
INSERT_KEY = """
INSERT INTO signing_keys (kid, public_key, private_key_encrypted, activates_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
RETURNING kid, created_at, activates_at
"""
# The newest key (a pending one included) stops signing when the new one starts.
RETIRE_ACTIVE_KEY = """
UPDATE signing_keys SET retired_at = now() + make_interval(secs => $1) WHERE retired_at IS NULL
RETURNING kid, created_at, activates_at, retired_at
"""
NOTIFY_KEYS_CHANGED = "SELECT pg_notify($1, $2)"


async def _insert_new_key(conn: asyncpg.Connection, config: Config, lead_seconds: float = 0) -> asyncpg.Record:
    private_key = Ed25519PrivateKey.generate()
    public_raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = new_kid()
    return await conn.fetchrow(INSERT_KEY, kid, public_raw, encrypt_private_key(config, kid, private_key),
                               float(lead_seconds))


def _key_view(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if row is None else {key: row[key] for key in row.keys()}


async def ensure_active_key(conn: asyncpg.Connection, config: Config) -> str:
    """The active key's kid, making one first when there is none (safe when many workers start at once)."""
    kid = await conn.fetchval(SELECT_ACTIVE_KID)
    if kid is not None:
        return kid
    async with conn.transaction():
        # The unique partial index would refuse a second active key; the lock makes latecomers wait and reuse it.
        await conn.execute(LOCK_KEYS, KEYS_LOCK_ID)
        kid = await conn.fetchval(SELECT_ACTIVE_KID)
        if kid is not None:
            return kid
        row = await _insert_new_key(conn, config)
        await audit.record(conn, SYSTEM, "signing_key.create", "signing_key", row["kid"], None, _key_view(row))
        await conn.execute(NOTIFY_KEYS_CHANGED, CHANNEL, row["kid"])
    return row["kid"]


async def rotate_keys(conn: asyncpg.Connection, config: Config, lead_seconds: float = ROTATION_LEAD_SECONDS) -> str:
    """Make a new key, published at once and signing ``lead_seconds`` later, when the current one retires; every
    process reloads on the notification. ``lead_seconds=0`` switches at once (a leaked key: accept brief refusals)."""
    async with conn.transaction():
        await conn.execute(LOCK_KEYS, KEYS_LOCK_ID)
        retired = await conn.fetchrow(RETIRE_ACTIVE_KEY, float(lead_seconds))
        row = await _insert_new_key(conn, config, lead_seconds)
        await audit.record(
            conn, SYSTEM, "signing_key.rotate", "signing_key", row["kid"], _key_view(retired), _key_view(row)
        )
        await conn.execute(NOTIFY_KEYS_CHANGED, CHANNEL, row["kid"])
    return row["kid"]


SELECT_ACTIVATES_AT = "SELECT activates_at FROM signing_keys WHERE kid = $1"


async def activation_of(conn: asyncpg.Connection, kid: str) -> datetime | None:
    """When key ``kid`` signs (or started signing)."""
    return await conn.fetchval(SELECT_ACTIVATES_AT, kid)


SELECT_ALL_KEYS = "SELECT kid, private_key_encrypted FROM signing_keys ORDER BY created_at, kid FOR UPDATE"
UPDATE_ENCRYPTED = "UPDATE signing_keys SET private_key_encrypted = $2 WHERE kid = $1"


async def reencrypt_keys(conn: asyncpg.Connection, config: Config, new_config: Config) -> int:
    """Re-encrypt every stored private key from ``config``'s secret to ``new_config``'s, in one transaction
    (all or none); :class:`KeyDecryptionError` when ``config`` does not hold the secret they are stored under."""
    async with conn.transaction():
        await conn.execute(LOCK_KEYS, KEYS_LOCK_ID)
        rows = await conn.fetch(SELECT_ALL_KEYS)
        for row in rows:
            private_key = decrypt_private_key(config, row["kid"], row["private_key_encrypted"])
            await conn.execute(UPDATE_ENCRYPTED, row["kid"], encrypt_private_key(new_config, row["kid"], private_key))
        # Neither secret is written anywhere: the entry says that it happened, and to which keys.
        await audit.record(conn, SYSTEM, "secret.rotate", "signing_key", None, None,
                           {"reencrypted_kids": [row["kid"] for row in rows]})
    return len(rows)


# A retired key is kept while a voucher it signed may still be live: the longest TTL any perk gives, plus the
# redeemer's leeway, past its retirement.
SELECT_LIVE_KEYS = """
WITH longest AS (SELECT COALESCE(max(voucher_ttl_seconds), 0) + $1 AS seconds FROM perks)
SELECT k.kid, k.public_key, k.private_key_encrypted, k.created_at, k.activates_at, k.retired_at,
       k.retired_at + make_interval(secs => longest.seconds) AS usable_until
FROM signing_keys k CROSS JOIN longest
WHERE k.retired_at IS NULL OR k.retired_at + make_interval(secs => longest.seconds) > $2
ORDER BY k.created_at, k.kid
"""


async def load_keys(conn: asyncpg.Connection, config: Config, now: datetime) -> list[SigningKey]:
    """Every key whose vouchers may still be live at ``now``; only the private halves of keys that sign now or
    will (the current key, and a pre-published one) are decrypted."""
    rows = await conn.fetch(SELECT_LIVE_KEYS, EXPIRY_LEEWAY_SECONDS, now)
    keys = []
    for row in rows:
        active = row["retired_at"] is None or row["retired_at"] > now
        keys.append(
            SigningKey(
                kid=row["kid"],
                public_key=Ed25519PublicKey.from_public_bytes(bytes(row["public_key"])),
                private_key=decrypt_private_key(config, row["kid"], row["private_key_encrypted"]) if active else None,
                created_at=row["created_at"],
                retired_at=row["retired_at"],
                usable_until=row["usable_until"],
                activates_at=row["activates_at"],
            )
        )
    return keys

