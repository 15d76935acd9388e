"""What is checked in Python before the database decides: the voucher's signature, and the expiry leeway."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from perks.core.errors import Refusal
from perks.privacy import mask_name

if TYPE_CHECKING:
    from perks.vouchers.keyring import KeyRing

# A terminal's clock and the QR's journey from phone to scanner may lag a little; never more than this.
EXPIRY_LEEWAY = timedelta(seconds=10)


def verified_voucher(keyring: KeyRing, token: str) -> tuple[str | None, datetime | None]:
    """``(voucher id, deadline)`` of a genuine voucher (the deadline is its ``exp`` plus the leeway), or
    ``(None, None)`` for anything else: the database then answers ``invalid_token`` in its place in the order."""
    try:
        claims = keyring.verify(token)
    except Refusal:
        return None, None
    return claims.jti, datetime.fromtimestamp(claims.exp, tz=timezone.utc) + EXPIRY_LEEWAY


def client_view(name: str, tier: str | None) -> dict[str, Any]:
    """The client as a merchant may see them: a masked name and the tier."""
    return {"display_name": mask_name(name), "tier": tier}
