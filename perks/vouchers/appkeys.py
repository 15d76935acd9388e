"""The typed application key under which a process keeps its voucher key ring."""

from __future__ import annotations

from aiohttp import web

from perks.vouchers.keyring import KeyRing

KEYRING = web.AppKey("keyring", KeyRing)
