"""Helpers for tests: a settable clock and an API driver that builds state the way users would."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from perks.accounts.service import create_user
from perks.core.auth import SYSTEM
from perks.core.clock import Clock

PASSWORD = "correct horse battery"


class SettableClock(Clock):
    """Real time, until a test sets an instant; then that instant, moved only by the test."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def now(self) -> datetime:
        return self.at if self.at is not None else super().now()

    def set(self, at: datetime) -> None:
        self.at = at

    def advance(self, **delta: float) -> None:
        self.at = (self.at or super().now()) + timedelta(**delta)


def unique(prefix: str) -> str:
    """A short unique name for a test object."""
    return f"{prefix}{secrets.token_hex(3)}"


class Api:
    """Drives the service over HTTP as each role would."""

    def __init__(self, client: TestClient, db: asyncpg.Connection) -> None:
        self.client = client
        self.db = db
        self._tokens: dict[str, str] = {}

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        """``(status, JSON body or text)`` of one request."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def login(self, username: str, password: str = PASSWORD) -> str:
        status, body = await self.call("POST", "/api/v1/auth/token", json={"username": username, "password": password})
        assert status == 200, body
        return body["access_token"]

    async def staff(self, role: str) -> str:
        """A session token of a new staff user of ``role`` (created as the command line would)."""
        if role not in self._tokens:
            username = unique(role)
            await create_user(self.db, SYSTEM, username=username, password=PASSWORD, role=role)
            self._tokens[role] = await self.login(username)
        return self._tokens[role]

    async def ok(self, method: str, path: str, token: str | None, expect: int = 200, **kwargs: Any) -> Any:
        """The JSON body of a request that must answer ``expect``."""
        status, body = await self.call(method, path, token, **kwargs)
        assert status == expect, (method, path, status, body)
        return body

    async def merchant(self, **fields: Any) -> dict[str, Any]:
        """A new active merchant (created by an operator)."""
        data = {"name": unique("洗车行"), "category": "car_wash", "city": "Yuxi"} | fields
        return await self.ok("POST", "/api/v1/merchants", await self.staff("operator"), 201, json=data)

    async def store(self, merchant_id: str, **fields: Any) -> dict[str, Any]:
        data = {"name": unique("store"), "address": "1 Main St"} | fields
        path = f"/api/v1/merchants/{merchant_id}/stores"
        return await self.ok("POST", path, await self.staff("operator"), 201, json=data)

    async def merchant_user(self, merchant_id: str, role: str, store_id: str | None = None) -> tuple[dict, str]:
        """A new manager or cashier of ``merchant_id`` and its session token."""
        data: dict[str, Any] = {"username": unique(role), "password": PASSWORD, "role": role}
        if store_id:
            data["store_id"] = store_id
        path = f"/api/v1/merchants/{merchant_id}/users"
        user = await self.ok("POST", path, await self.staff("operator"), 201, json=data)
        return user, await self.login(user["username"])

    async def tier(self, code: str | None = None, **fields: Any) -> dict[str, Any]:
        data = {"code": code or unique("t"), "name": "Gold", "rank": secrets.randbelow(10**6), "min_points": 0} | fields
        return await self.ok("POST", "/api/v1/tiers", await self.staff("operator"), 201, json=data)

    async def perk(self, code: str | None = None, **fields: Any) -> dict[str, Any]:
        data = {"code": code or unique("p"), "name": "Car wash", "category": "car_wash"} | fields
        return await self.ok("POST", "/api/v1/perks", await self.staff("operator"), 201, json=data)

    async def entitle(self, tier: str, perk: str, yearly_quota: int | None, monthly_cap: int | None = None) -> Any:
        path = f"/api/v1/tiers/{tier}/entitlements/{perk}"
        body = {"yearly_quota": yearly_quota, "monthly_cap": monthly_cap}
        return await self.ok("PUT", path, await self.staff("operator"), json=body)

    async def agree(self, merchant_id: str, perk: str, yearly_capacity: int | None, unit_price_fen: int = 1500) -> Any:
        path = f"/api/v1/merchants/{merchant_id}/perks/{perk}"
        body = {"yearly_capacity": yearly_capacity, "unit_price_fen": unit_price_fen}
        return await self.ok("PUT", path, await self.staff("operator"), json=body)

    async def new_client(self, tier: str | None = None, **fields: Any) -> dict[str, Any]:
        data = {"external_ref": unique("C"), "name": "罗小升"} | fields
        if tier:
            data["tier"] = tier
        return await self.ok("POST", "/api/v1/clients", await self.staff("operator"), 201, json=data)

    async def client_session(self, client_id: str) -> str:
        body = await self.ok("POST", f"/api/v1/clients/{client_id}/sessions", await self.staff("operator"), 201)
        return body["access_token"]

    async def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        """The audit entries matching ``filters`` (``from_`` for ``from``), newest first, read as an auditor."""
        params = {("from" if name == "from_" else name): str(value) for name, value in filters.items()}
        params.setdefault("limit", "500")
        body = await self.ok("GET", "/api/v1/audit", await self.staff("auditor"), params=params)
        return body["items"]

    async def entitled_client(
        self, yearly_quota: int | None = 5, monthly_cap: int | None = None, *, perk: dict[str, Any] | None = None,
        **client_fields: Any,
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """``(client, its session token, perk)``: a new client of a new tier entitled to a new perk."""
        tier = await self.tier()
        new_perk = await self.perk(**(perk or {}))
        await self.entitle(tier["code"], new_perk["code"], yearly_quota, monthly_cap)
        client = await self.new_client(tier=tier["code"], **client_fields)
        return client, await self.client_session(client["id"]), new_perk

    async def voucher(self, client_token: str, perk: str) -> dict[str, Any]:
        """A voucher for ``perk`` taken by the client (``POST /me/vouchers``)."""
        return await self.ok("POST", "/api/v1/me/vouchers", client_token, 201, json={"perk": perk})

    async def program(
        self,
        yearly_quota: int | None = 5,
        monthly_cap: int | None = None,
        yearly_capacity: int | None = None,
        *,
        unit_price_fen: int = 1500,
        perk: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A perk a tier grants and a merchant honours: ``{tier, perk, merchant, store, manager, cashier}``
        (``manager`` and ``cashier`` are session tokens; the merchant has one store, the cashier's)."""
        tier = await self.tier()
        new_perk = await self.perk(**(perk or {}))
        await self.entitle(tier["code"], new_perk["code"], yearly_quota, monthly_cap)
        merchant = await self.merchant()
        store = await self.store(merchant["id"])
        await self.agree(merchant["id"], new_perk["code"], yearly_capacity, unit_price_fen)
        _, manager = await self.merchant_user(merchant["id"], "manager")
        _, cashier = await self.merchant_user(merchant["id"], "cashier", store["id"])
        return {
            "tier": tier["code"], "perk": new_perk["code"], "merchant": merchant["id"], "store": store["id"],
            "manager": manager, "cashier": cashier,
        }

    async def member(self, tier: str, **fields: Any) -> tuple[dict[str, Any], str]:
        """A new client of ``tier`` and its session token."""
        client = await self.new_client(tier=tier, **fields)
        return client, await self.client_session(client["id"])

    async def redeem(self, token: str, voucher_token: str, key: str | None = None, **body: Any) -> tuple[int, Any]:
        """``(status, body)`` of ``POST /merchant/redemptions`` by the merchant user holding ``token``."""
        headers = {"Idempotency-Key": key} if key is not None else None
        return await self.call(
            "POST", "/api/v1/merchant/redemptions", token, json={"token": voucher_token, **body}, headers=headers
        )

    async def counter_mismatches(self) -> list[dict[str, Any]]:
        """Every usage counter whose ``used`` differs from the count of its redemptions not voided (none, always)."""
        from perks.quotas.invariants import mismatched_counters

        return await mismatched_counters(self.db)

