"""Hostile input is refused at the edge: NUL bytes and invalid UTF-8 anywhere, bodies of the wrong type or size.

Each case checks the exact status and code, the field named, and that nothing changed in the database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from perks.app import create_app

NUL = "must not contain the NUL character"
UTF8 = "must be valid UTF-8"
TIER = {"code": "gold", "name": "Gold", "rank": 1, "min_points": 0}
COUNTED = ("tiers", "clients", "merchants", "users", "redemptions", "audit_log", "idempotency_keys")


async def counts(db) -> dict[str, int]:
    """How many rows the tables a hostile request could touch hold."""
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in COUNTED}


async def raw_http(client, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client library would send; ``(status, headers, body)`` of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    header_block, _, content = answer.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, content


def error_of(content: bytes) -> tuple[str, dict[str, Any]]:
    """``(code, details.fields)`` of an error body."""
    error = json.loads(content)["error"]
    return error["code"], error["details"].get("fields", {})


async def test_nul_in_a_query_parameter_is_400_naming_it(api, db):
    token, auditor = await api.staff("operator"), await api.staff("auditor")
    before = await counts(db)
    status, body = await api.call("GET", "/api/v1/clients?external_ref=%00", token)
    assert (status, body["error"]["code"], body["error"]["details"]["fields"]) == (400, "bad_request", {"external_ref": NUL})
    status, body = await api.call("GET", "/api/v1/audit?entity_type=a%00b&limit=5", auditor)
    assert (status, body["error"]["details"]["fields"]) == (400, {"entity_type": NUL})
    # Even a parameter the route does not read, and before any session is checked.
    status, body = await api.call("GET", "/api/v1/tiers?whatever=x%00", None)
    assert (status, body["error"]["details"]["fields"]) == (400, {"whatever": NUL})
    assert await counts(db) == before


async def test_invalid_utf8_in_a_query_parameter_is_400(api):
    status, body = await api.call("GET", "/api/v1/clients?external_ref=%FF%FE", await api.staff("operator"))
    assert (status, body["error"]["details"]["fields"]) == (400, {"external_ref": UTF8})


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/me/vouchers/%00/qr.png", "voucher_id"),
        ("/api/v1/clients/a%00b", "client_id"),
        ("/api/v1/tiers/go%00ld/entitlements", "tier"),
    ],
)
async def test_nul_in_a_path_parameter_is_400_naming_it(api, path, field):
    token = await (api.client_session((await api.new_client())["id"]) if "/me/" in path else api.staff("operator"))
    status, body = await api.call("GET", path, token)
    assert (status, body["error"]["code"], body["error"]["details"]["fields"]) == (400, "bad_request", {field: NUL})


async def test_nul_and_invalid_utf8_in_idempotency_key_are_400(api, client, db):
    """Invalid UTF-8 reaches the service and is refused naming the header; a raw NUL byte in a header is refused
    by the HTTP parser itself, before any handler runs."""
    shop = await api.program()
    _, client_token = await api.member(shop["tier"])
    voucher = await api.voucher(client_token, shop["perk"])
    before = await counts(db)
    body = json.dumps({"token": voucher["token"]}).encode()
    for key in (b"abc\x00def", b"abc\xff\xfedef"):
        head = (
            b"POST /api/v1/merchant/redemptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + shop["cashier"].encode() + b"\r\nIdempotency-Key: " + key + b"\r\n"
        )
        status, _, content = await raw_http(client, head, body)
        if b"\x00" in key:
            assert status == 400, content
        else:
            assert (status, *error_of(content)) == (400, "bad_request", {"Idempotency-Key": UTF8}), content
    assert await counts(db) == before
    # The voucher is untouched: it still redeems.
    status, _ = await api.redeem(shop["cashier"], voucher["token"], key="a-good-key")
    assert status == 201


async def test_invalid_utf8_in_the_authorization_header_is_401(client):
    head = b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\xff\r\n"
    status, headers, content = await raw_http(client, head)
    assert (status, error_of(content)[0], headers.get("WWW-Authenticate")) == (401, "unauthorized", "Bearer")


async def test_nul_in_a_json_string_is_400_naming_the_field(api, db):
    token = await api.staff("operator")
    before = await counts(db)
    status, body = await api.call("POST", "/api/v1/tiers", token, json=TIER | {"name": "Go\u0000ld"})
    assert (status, body["error"]["details"]["fields"]) == (400, {"name": NUL})
    status, body = await api.call("POST", "/api/v1/clients", token, json={"external_ref": "C1", "name": "a\u0000"})
    assert (status, body["error"]["details"]["fields"]) == (400, {"name": NUL})
    status, body = await api.call("POST", "/api/v1/auth/token", None, json={"username": "x\u0000", "password": "y"})
    assert (status, body["error"]["details"]["fields"]) == (400, {"username": NUL})
    assert await counts(db) == before


async def test_nul_and_invalid_utf8_in_a_portal_form_field_are_400(client, db):
    before = await counts(db)
    for form, field, problem in (
        (b"username=a%00b&password=x&csrf=y", "username", NUL),
        (b"username=ab&password=%FF%FE&csrf=y", "password", UTF8),
        (b"username=ab\xff&password=x&csrf=y", "username", UTF8),
    ):
        head = b"POST /portal/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        status, headers, content = await raw_http(client, head, form)
        assert status == 400, (form, content[:200])
        assert headers["Content-Type"].startswith("text/html")  # a page, in the reader's language
        assert b"bad_request" in content or "无法完成操作".encode() in content
    head = b"POST /wallet/open HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\n"
    status, _, _ = await raw_http(client, head, b"--x\r\n")
    assert status == 400  # no boundary: unreadable, never a 500
    assert await counts(db) == before


async def test_a_session_cookie_of_invalid_utf8_is_no_session(client):
    for path, cookie, expected in ((b"/wallet/", b"perks_wallet", 401), (b"/portal/scan", b"perks_portal", 303)):
        head = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + b"=ab\xe9\xff\r\n"
        status, _, _ = await raw_http(client, head)
        assert status == expected, path


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", json.dumps(TIER).encode()),
        ("application/x-www-form-urlencoded", b"code=gold&name=Gold&rank=1&min_points=0"),
        ("application/xml", b"<tier><code>gold</code></tier>"),
        (None, json.dumps(TIER).encode()),
    ],
)
async def test_a_json_endpoint_refuses_other_content_types_with_415(api, db, content_type, data):
    token = await api.staff("operator")
    before = await counts(db)
    headers = {"Content-Type": content_type} if content_type else {}
    async with api.client.post(
        "/api/v1/tiers", data=data, headers={"Authorization": f"Bearer {token}", **headers},
        skip_auto_headers=() if content_type else ("Content-Type",),
    ) as response:
        body = await response.json()
        assert response.status == 415, body
    assert body["error"]["code"] == "unsupported_media_type"
    assert set(body["error"]) == {"code", "message", "details"}
    assert await counts(db) == before


async def test_the_csv_import_keeps_its_own_content_type(api, db):
    token = await api.staff("operator")
    before = await counts(db)
    status, body = await api.call("POST", "/api/v1/clients/import", token, json={"external_ref": "x"})
    assert (status, body["error"]["details"]["fields"]) == (400, {"body": "must be text/csv"})
    status, body = await api.call(
        "POST", "/api/v1/clients/import", token, data=b"external_ref,name\nC1,Li\n", headers={"Content-Type": "text/csv"}
    )
    assert (status, body["created"]) == (200, 1)
    assert (await counts(db))["clients"] == before["clients"] + 1


async def test_an_oversized_body_is_413_and_changes_nothing(api, db):
    token = await api.staff("operator")
    before = await counts(db)
    status, body = await api.call("POST", "/api/v1/tiers", token, json=TIER | {"name": "x" * (70 * 1024)})
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert await counts(db) == before


async def test_json_answers_are_never_cached(api):
    token = await api.staff("operator")
    client = await api.new_client(phone="13800000000", birthday="1980-05-17")
    for path in (f"/api/v1/clients/{client['id']}", "/api/v1/clients"):
        async with api.client.get(path, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
    client_token = await api.client_session(client["id"])
    async with api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {client_token}"}) as response:
        assert (response.status, response.headers["Cache-Control"]) == (200, "no-store")
    # The JWKS keeps the caching it declares itself.
    async with api.client.get("/.well-known/jwks.json") as response:
        assert response.headers["Cache-Control"] != "no-store"


async def test_metrics_require_the_configured_token(config, clock, aiohttp_client):
    client = await aiohttp_client(create_app(dataclasses.replace(config, metrics_token="m" * 32), clock=clock))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + "m" * 32}):
        async with client.get("/metrics", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
    async with client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32}) as response:
        assert response.status == 200
        assert "perks_http_requests_total" in await response.text()
