"""Webhook secrets (made, stored encrypted) and the signature every delivery carries.

A delivery is signed ``v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``: binding the timestamp lets a receiver
refuse an old request replayed to it. Secrets are kept encrypted with AES-GCM under a key derived from PERKS_SECRET,
the subscription's id as associated data (a ciphertext moved to another row does not decrypt)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from perks.core.auth import derive_key

SECRET_PREFIX = "whsec_"
NONCE_BYTES = 12
SIGNATURE_VERSION = "v1"


class SecretDecryptionError(Exception):
    """A stored webhook secret cannot be decrypted: PERKS_SECRET is not the one it was stored under."""


def new_secret() -> str:
    """A fresh signing secret (256 random bits), shown to the admin once."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _cipher(server_secret: str) -> AESGCM:
    return AESGCM(derive_key(server_secret, "webhook-secrets"))


def encrypt_secret(server_secret: str, webhook_id: UUID, secret: str) -> bytes:
    """``nonce || AES-GCM ciphertext`` of a webhook's secret, bound to its id."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(server_secret).encrypt(nonce, secret.encode(), webhook_id.bytes)


def decrypt_secret(server_secret: str, webhook_id: UUID, blob: bytes) -> str:
    """The secret stored as ``blob`` for ``webhook_id``."""
    try:
        raw = _cipher(server_secret).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], webhook_id.bytes)
    except (InvalidTag, ValueError) as exc:
        raise SecretDecryptionError(f"webhook {webhook_id}: secret cannot be decrypted with this PERKS_SECRET") from exc
    return raw.decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Perks-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def verify(secret: str, timestamp: str, body: bytes, header: str, *, now: float, tolerance: float = 300) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` with ``secret``, no older than ``tolerance`` seconds.

    What a receiver does (docs/events.md shows it standalone); kept here so that tests check the documented rule."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    expected = signature(secret, sent, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))
