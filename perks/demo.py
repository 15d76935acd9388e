"""`perks demo`: a believable program in one county town, seeded through the same services the API uses.

Seeding is idempotent: every object is looked up by its natural key first and created only when missing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import asyncpg

from perks.accounts.service import create_merchant_user, create_user
from perks.catalogue.service import create_perk, create_tier, put_entitlement
from perks.clients.service import create_client, set_tags
from perks.core.auth import SYSTEM
from perks.core.config import Config
from perks.grants.service import create_grant
from perks.merchants.service import create_merchant, create_store, put_agreement

TOWN = "华宁县"

TIERS = [
    # code, name, rank, min_points
    ("standard", "普卡", 1, 0),
    ("gold", "金卡", 2, 10_000),
    ("platinum", "白金卡", 3, 50_000),
    ("diamond", "钻石卡", 4, 200_000),
]

PERKS = [
    # code, name, category, description, voucher_ttl_seconds, birthday_only
    ("car_wash", "免费洗车", "car_wash", "标准洗车一次", 300, False),
    ("haircut", "免费理发", "barber", "洗剪吹一次", 300, False),
    ("cinema_half", "电影票半价", "cinema", "2D/3D 场次半价一张", 300, False),
    ("vip_lane", "超市VIP通道", "supermarket", "收银快速通道", 600, False),
    ("birthday_gift", "生日礼物", "supermarket", "生日当月领取礼品一份", 600, True),
]

# tier -> perk -> (yearly_quota, monthly_cap); None is unlimited (still counted)
ENTITLEMENTS: dict[str, dict[str, tuple[int | None, int | None]]] = {
    "standard": {"car_wash": (2, 1), "vip_lane": (None, None)},
    "gold": {"car_wash": (6, 2), "haircut": (4, 1), "cinema_half": (10, 3), "vip_lane": (None, None), "birthday_gift": (1, None)},
    "platinum": {"car_wash": (12, 3), "haircut": (8, 2), "cinema_half": (20, 4), "vip_lane": (None, None), "birthday_gift": (1, None)},
    "diamond": {"car_wash": (24, 4), "haircut": (12, 2), "cinema_half": (30, 6), "vip_lane": (None, None), "birthday_gift": (1, None)},
}

MERCHANTS = [
    # name, category, stores, agreements {perk: (yearly_capacity, unit_price_fen)}, manager, cashiers
    ("洁亮汽车美容", "car_wash", ["洁亮 城南店", "洁亮 宁州路店"], {"car_wash": (2000, 2500)}, "manager1", ["cashier1", "cashier2"]),
    ("剪艺理发", "barber", ["剪艺 步行街店"], {"haircut": (800, 3000)}, "barber_manager", ["barber_cashier"]),
    ("星光影城", "cinema", ["星光影城 万达店"], {"cinema_half": (3000, 2000)}, "cinema_manager", ["cinema_cashier"]),
    ("惠民超市", "supermarket", ["惠民 中心店", "惠民 东门店"], {"vip_lane": (None, 0), "birthday_gift": (500, 5000)}, "market_manager", ["market_cashier"]),
]

STAFF = [("admin", "admin"), ("operator", "operator"), ("auditor", "auditor")]

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志新春梅海燕"
# Segments: who some demo clients are (external_ref -> tags), and a thank-you grant for the first client.
DEMO_TAGS = {"DEMO0001": ["car_owner"], "DEMO0002": ["car_owner", "parent"]}
DEMO_GRANT = {"perk": "haircut", "quantity": 2, "days": 60, "reason": "感谢您对网点服务提出的宝贵建议"}
TIER_SHARES = [("standard", 0.6), ("gold", 0.25), ("platinum", 0.1), ("diamond", 0.05)]


def demo_password(username: str) -> str:
    """The demo's password for a user: easy to type, printed at start, never used outside the demo."""
    role = username.rstrip("0123456789").split("_")[-1]
    return f"perks-demo-{role}"


@dataclass
class DemoSummary:
    logins: list[tuple[str, str, str]] = field(default_factory=list)
    clients: int = 0
    first_client_id: str | None = None
    created: int = 0


async def _user_exists(conn: asyncpg.Connection, username: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM users WHERE username = $1", username))


async def _seed_catalogue(conn: asyncpg.Connection, summary: DemoSummary) -> None:
    for code, name, rank, min_points in TIERS:
        if not await conn.fetchval("SELECT 1 FROM tiers WHERE code = $1", code):
            await create_tier(conn, SYSTEM, code=code, name=name, rank=rank, min_points=min_points)
            summary.created += 1
    for code, name, category, description, ttl, birthday_only in PERKS:
        if not await conn.fetchval("SELECT 1 FROM perks WHERE code = $1", code):
            await create_perk(
                conn, SYSTEM, code=code, name=name, category=category, description=description,
                voucher_ttl_seconds=ttl, birthday_only=birthday_only,
            )
            summary.created += 1
    for tier, grants in ENTITLEMENTS.items():
        for perk, (quota, cap) in grants.items():
            exists = await conn.fetchval(
                "SELECT 1 FROM entitlements WHERE tier_code = $1 AND perk_code = $2", tier, perk
            )
            if not exists:
                await put_entitlement(conn, SYSTEM, tier, perk, yearly_quota=quota, monthly_cap=cap)


async def _seed_merchants(conn: asyncpg.Connection, summary: DemoSummary) -> None:
    for name, category, store_names, agreements, manager, cashiers in MERCHANTS:
        merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE name = $1 AND city = $2", name, TOWN)
        if merchant_id is None:
            merchant = await create_merchant(conn, SYSTEM, name=name, category=category, city=TOWN, contact_phone="0877-5012345")
            merchant_id = UUID(str(merchant["id"]))
            summary.created += 1
        store_ids: list[UUID] = []
        for index, store_name in enumerate(store_names):
            store_id = await conn.fetchval(
                "SELECT id FROM stores WHERE merchant_id = $1 AND name = $2", merchant_id, store_name
            )
            if store_id is None:
                store = await create_store(conn, SYSTEM, merchant_id, name=store_name, address=f"{TOWN}宁州街道 {index + 1} 号")
                store_id = UUID(str(store["id"]))
            store_ids.append(store_id)
        for perk, (capacity, price) in agreements.items():
            await put_agreement(conn, SYSTEM, merchant_id, perk, yearly_capacity=capacity, unit_price_fen=price)
        if not await _user_exists(conn, manager):
            await create_merchant_user(
                conn, SYSTEM, merchant_id, username=manager, password=demo_password(manager), role="manager", store_id=None
            )
        summary.logins.append((manager, demo_password(manager), f"manager of {name}"))
        for index, cashier in enumerate(cashiers):
            store_id = store_ids[index % len(store_ids)]
            if not await _user_exists(conn, cashier):
                await create_merchant_user(
                    conn, SYSTEM, merchant_id, username=cashier, password=demo_password(cashier), role="cashier", store_id=store_id
                )
            summary.logins.append((cashier, demo_password(cashier), f"cashier at {store_names[index % len(store_names)]}"))


def _client_fields(rng: random.Random, number: int) -> dict[str, Any]:
    name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    roll, tier = rng.random(), "standard"
    for code, share in TIER_SHARES:
        if roll < share:
            tier = code
            break
        roll -= share
    if number == 1:
        tier = "gold"
    birthday = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
    phone = f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}"
    return {"external_ref": f"DEMO{number:04d}", "name": name, "phone": phone, "birthday": birthday, "tier": tier}


async def _seed_clients(conn: asyncpg.Connection, summary: DemoSummary, count: int) -> None:
    rng = random.Random(20261129)
    existing = {r["external_ref"] for r in await conn.fetch("SELECT external_ref FROM clients WHERE external_ref LIKE 'DEMO%'")}
    for number in range(1, count + 1):
        fields = _client_fields(rng, number)
        if fields["external_ref"] not in existing:
            await create_client(conn, SYSTEM, **fields)
    summary.clients = await conn.fetchval("SELECT count(*) FROM clients")
    first = await conn.fetchval("SELECT id FROM clients WHERE external_ref = 'DEMO0001'")
    summary.first_client_id = str(first) if first else None


async def seed_demo(conn: asyncpg.Connection, config: Config, *, clients: int = 300) -> DemoSummary:
    """Seed the demo program (idempotent) and return what to print."""
    summary = DemoSummary()
    for username, role in STAFF:
        if not await _user_exists(conn, username):
            await create_user(conn, SYSTEM, username=username, password=demo_password(username), role=role)
        summary.logins.append((username, demo_password(username), f"bank {role}"))
    await _seed_catalogue(conn, summary)
    await _seed_merchants(conn, summary)
    await _seed_clients(conn, summary, clients)
    await _seed_segments(conn, config)
    return summary


async def _seed_segments(conn: asyncpg.Connection, config: Config) -> None:
    for ref, tags in DEMO_TAGS.items():
        client_id = await conn.fetchval("SELECT id FROM clients WHERE external_ref = $1", ref)
        if client_id is not None:
            await set_tags(conn, SYSTEM, client_id, tags)
    first = await conn.fetchval("SELECT id FROM clients WHERE external_ref = 'DEMO0001'")
    if first is None or await conn.fetchval("SELECT 1 FROM grants WHERE client_id = $1", first):
        return
    now = datetime.now(timezone.utc)
    today = now.astimezone(config.timezone).date()
    await create_grant(
        conn, SYSTEM, first, perk=DEMO_GRANT["perk"], quantity=DEMO_GRANT["quantity"],
        expires_on=today + timedelta(days=DEMO_GRANT["days"]), reason=DEMO_GRANT["reason"], now=now, today=today,
    )


def print_welcome(summary: DemoSummary, host: str, port: int) -> None:
    """Tell the person who ran the demo how to try it."""
    base = f"http://{host}:{port}"
    width = max(len(login[0]) for login in summary.logins)
    print()
    print(f"perks demo: {summary.clients} clients, {len(MERCHANTS)} merchants in {TOWN}")
    print(f"  API documentation  {base}/api/docs")
    print(f"  merchant portal    {base}/portal/   (log in as cashier1 / perks-demo-cashier)")
    print(f"  staff console      {base}/console/  (log in as admin / perks-demo-admin)")
    print(f"  client wallet      mint a one-time link: POST {base}/api/v1/clients/{summary.first_client_id}/wallet-links (as admin)")
    print("  logins:")
    for username, password, what in summary.logins:
        print(f"    {username.ljust(width)}  {password.ljust(22)}  {what}")
    print("  the whole loop with curl is in README.md (client DEMO0001 is a gold client).")
    print()
