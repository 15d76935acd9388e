"""The typed application keys under which a process keeps its voucher key ring and its QR renderers."""

from __future__ import annotations

from aiohttp import web

from perks.vouchers.keyring import KeyRing
from perks.vouchers.qr_pool import QrPool

KEYRING = web.AppKey("keyring", KeyRing)
QR_POOL = web.AppKey("qr_pool", QrPool)
