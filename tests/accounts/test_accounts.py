"""Sessions and accounts: logging in, throttling, staff and merchant users, client sessions, forged tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from perks.accounts import service as accounts
from perks.core.auth import SESSION_ALGORITHM, SESSION_AUDIENCE, SESSION_ISSUER, Principal, SessionTokens, derive_key
from perks.core.errors import Unauthorized
from tests.support import PASSWORD, unique

TOKEN = "/api/v1/auth/token"
STAFF = "/api/v1/staff"
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)


def _code(body) -> str:
    return body["error"]["code"]


async def _new_staff(api, role: str = "operator") -> str:
    username = unique(role)
    await api.ok("POST", STAFF, await api.staff("admin"), 201, json={"username": username, "password": PASSWORD, "role": role})
    return username


async def _login(api, username: str, password: str = PASSWORD):
    return await api.call("POST", TOKEN, json={"username": username, "password": password})


# ---- logging in ------------------------------------------------------------------------------


async def test_login_gives_a_bearer_session_token_that_works(api, config):
    username = await _new_staff(api, "auditor")
    status, body = await _login(api, username)
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "role", "merchant_id", "store_id"}
    assert (body["token_type"], body["expires_in"], body["role"]) == ("Bearer", config.session_ttl_seconds, "auditor")
    assert (body["merchant_id"], body["store_id"]) == (None, None)
    assert (await api.ok("GET", "/api/v1/audit", body["access_token"]))["items"]


async def test_a_cashier_login_names_its_merchant_and_store(api):
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    cashier, _ = await api.merchant_user(merchant["id"], "cashier", store["id"])
    status, body = await _login(api, cashier["username"])
    assert status == 200
    assert (body["role"], body["merchant_id"], body["store_id"]) == ("cashier", merchant["id"], store["id"])


async def test_wrong_password_and_unknown_user_look_the_same(api):
    username = await _new_staff(api)
    wrong = await _login(api, username, "not the password")
    unknown = await _login(api, unique("nobody"), PASSWORD)
    assert wrong[0] == unknown[0] == 401
    assert _code(wrong[1]) == _code(unknown[1]) == "invalid_credentials"
    assert wrong[1] == unknown[1]


@pytest.mark.parametrize(
    "data, field",
    [({"username": "x"}, "password"), ({"password": "x"}, "username"), ({"username": "", "password": "x"}, "username"),
     ({"username": "a\x00b", "password": "x"}, "username"), ({"username": "a", "password": "p", "otp": 1}, "otp")],
)
async def test_a_malformed_login_is_400_not_a_failure(api, data, field):
    status, body = await api.call("POST", TOKEN, json=data)
    assert status == 400
    assert field in body["error"]["details"]["fields"]


async def test_a_nul_in_a_username_is_no_user_to_the_service(db):
    # The portal's login form calls the service directly; PostgreSQL text cannot hold NUL.
    with pytest.raises(Unauthorized) as refused:
        await accounts.login(db, "admin\x00", PASSWORD, T0)
    assert refused.value.code == "invalid_credentials"


async def test_five_failures_lock_a_username_for_fifteen_minutes(api, clock):
    username = await _new_staff(api)
    bystander = await _new_staff(api)
    clock.set(T0)
    for minute in range(5):
        clock.set(T0 + timedelta(minutes=minute))
        status, body = await _login(api, username, "wrong password")
        assert (status, _code(body)) == (401, "invalid_credentials")

    status, body = await _login(api, username, "wrong password")
    assert (status, _code(body)) == (429, "too_many_attempts")
    # The right password is refused too while the lock holds; other usernames are not affected.
    status, body = await _login(api, username)
    assert (status, _code(body)) == (429, "too_many_attempts")
    assert (await _login(api, bystander))[0] == 200

    # The lock lifts when the oldest of the five failures leaves the window (T0 + 15 min).
    clock.set(T0 + timedelta(minutes=14, seconds=59))
    async with api.client.post(TOKEN, json={"username": username, "password": PASSWORD}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["details"]["retry_after_seconds"] == 1
    clock.set(T0 + timedelta(minutes=15))
    assert (await _login(api, username))[0] == 200


async def test_retry_after_counts_down_to_the_end_of_the_window(api, clock):
    username = await _new_staff(api)
    clock.set(T0)
    for _ in range(5):
        await _login(api, username, "wrong password")
    clock.set(T0 + timedelta(minutes=10))
    async with api.client.post(TOKEN, json={"username": username, "password": PASSWORD}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "300"


async def test_failures_older_than_the_window_do_not_count(api, clock):
    username = await _new_staff(api)
    clock.set(T0)
    for _ in range(4):
        await _login(api, username, "wrong password")
    clock.set(T0 + timedelta(minutes=16))
    for _ in range(4):
        status, _ = await _login(api, username, "wrong password")
        assert status == 401
    assert (await _login(api, username))[0] == 200


async def test_successful_logins_are_not_counted_as_failures(api, clock):
    username = await _new_staff(api)
    clock.set(T0)
    for _ in range(4):
        await _login(api, username, "wrong password")
    for _ in range(3):
        assert (await _login(api, username))[0] == 200
    assert (await _login(api, username, "wrong password"))[0] == 401
    assert (await _login(api, username))[0] == 429


async def test_parallel_guesses_cannot_exceed_five_per_window(api, clock):
    username = await _new_staff(api)
    clock.set(T0)
    results = await asyncio.gather(*(_login(api, username, f"guess {i}") for i in range(12)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [401] * 5 + [429] * 7


async def test_an_unknown_username_is_throttled_too(api, clock):
    clock.set(T0)
    username = unique("ghost")
    for _ in range(5):
        assert (await _login(api, username))[0] == 401
    assert (await _login(api, username))[0] == 429


# ---- session tokens --------------------------------------------------------------------------


def _claims(**overrides):
    now = int(datetime.now(timezone.utc).timestamp())
    claims = {"iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE, "typ": "session", "sub": "00000000-0000-0000-0000-000000000001",
              "role": "admin", "usr": "mallory", "iat": now, "exp": now + 3600}
    return {k: v for k, v in (claims | overrides).items() if v is not None}


def _hs512(claims, key: bytes) -> str:
    # Built by hand: PyJWT will not sign HS512 with a 32-byte key, but an attacker's tool would.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha512).digest())


@pytest.fixture
def session_key(config) -> bytes:
    return derive_key(config.secret, "session-tokens")


async def test_a_well_made_token_is_accepted(api, session_key, db):
    # The control for the attacks below: only the one thing each changes makes it fail. The token must name a
    # real, active account at its current session generation: the session check reads it on every request.
    await api.staff("admin")
    admin_id = await db.fetchval("SELECT id::text FROM users WHERE role = 'admin'")
    token = jwt.encode(_claims(sub=admin_id, gen=0), session_key, algorithm=SESSION_ALGORITHM)
    assert (await api.call("GET", "/api/v1/audit", token))[0] == 200
    for forged in (_claims(), _claims(sub=admin_id, gen=1), _claims(sub="not-a-uuid")):
        status, body = await api.call("GET", "/api/v1/audit", jwt.encode(forged, session_key, algorithm="HS256"))
        assert (status, _code(body)) == (401, "unauthorized")


def _tampered(token: str) -> str:
    """The token with the last three characters of its signature changed (never to what they were)."""
    return token[:-3] + ("BBB" if token.endswith("AAA") else "AAA")


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda key: jwt.encode(_claims(), derive_key("another-secret-0123456789", "session-tokens"), algorithm="HS256"), id="other-secret"),
        pytest.param(lambda key: jwt.encode(_claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(lambda key: _hs512(_claims(), key), id="other-hmac-alg"),
        pytest.param(lambda key: jwt.encode(_claims(aud="perks:voucher"), key, algorithm="HS256"), id="other-audience"),
        pytest.param(lambda key: jwt.encode(_claims(aud=None), key, algorithm="HS256"), id="no-audience"),
        pytest.param(lambda key: jwt.encode(_claims(iss="someone-else"), key, algorithm="HS256"), id="other-issuer"),
        pytest.param(lambda key: jwt.encode(_claims(typ="refresh"), key, algorithm="HS256"), id="not-a-session"),
        pytest.param(lambda key: jwt.encode(_claims(role="root"), key, algorithm="HS256"), id="unknown-role"),
        pytest.param(lambda key: jwt.encode(_claims(exp=int(datetime.now(timezone.utc).timestamp()) - 1), key, algorithm="HS256"), id="expired"),
        pytest.param(lambda key: jwt.encode(_claims(exp=None), key, algorithm="HS256"), id="no-expiry"),
        pytest.param(lambda key: _tampered(jwt.encode(_claims(), key, algorithm="HS256")), id="tampered"),
        pytest.param(lambda key: "not.a.token", id="garbage"),
    ],
)
async def test_forged_or_foreign_session_tokens_are_401(api, session_key, forge):
    status, body = await api.call("GET", "/api/v1/audit", forge(session_key))
    assert (status, _code(body)) == (401, "unauthorized")


async def test_a_session_token_expires_by_the_service_clock(api, clock, config):
    clock.set(T0)
    token = await api.login(await _new_staff(api, "auditor"))
    clock.set(T0 + timedelta(seconds=config.session_ttl_seconds - 1))
    assert (await api.call("GET", "/api/v1/audit", token))[0] == 200
    clock.set(T0 + timedelta(seconds=config.session_ttl_seconds))
    status, body = await api.call("GET", "/api/v1/audit", token)
    assert (status, _code(body)) == (401, "unauthorized")


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_a_missing_or_foreign_authorization_header_is_401(api, header):
    async with api.client.get("/api/v1/audit", headers={"Authorization": header} if header else {}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"]["code"] == "unauthorized"


# ---- staff accounts --------------------------------------------------------------------------


async def test_admin_creates_staff_and_the_creation_is_audited_without_the_password(api):
    username = unique("op")
    user = await api.ok("POST", STAFF, await api.staff("admin"), 201, json={"username": username, "password": PASSWORD, "role": "operator"})
    assert set(user) == {"id", "username", "role", "status"}
    assert (user["username"], user["role"]) == (username, "operator")
    assert (await _login(api, username))[1]["role"] == "operator"

    [entry] = await api.audit_entries(entity_type="user", entity_id=user["id"])
    assert (entry["action"], entry["before"], entry["after"]) == ("user.create", None, user)
    assert entry["actor"]["role"] == "admin"
    assert PASSWORD not in str(entry) and "hash" not in str(entry)


@pytest.mark.parametrize("role", ["operator", "auditor", "manager", "cashier"])
async def test_only_an_admin_creates_staff(api, role):
    if role in ("manager", "cashier"):
        merchant = await api.merchant()
        store = await api.store(merchant["id"])
        _, token = await api.merchant_user(merchant["id"], role, store["id"] if role == "cashier" else None)
    else:
        token = await api.staff(role)
    status, body = await api.call("POST", STAFF, token, json={"username": unique("x"), "password": PASSWORD, "role": "admin"})
    assert (status, _code(body)) == (403, "forbidden")


async def test_a_taken_username_is_409(api):
    username = await _new_staff(api)
    status, body = await api.call("POST", STAFF, await api.staff("admin"), json={"username": username, "password": PASSWORD, "role": "auditor"})
    assert (status, _code(body)) == (409, "conflict")
    assert body["error"]["details"]["fields"] == {"username": "already taken"}
    created = [e for e in await api.audit_entries(entity_type="user") if e["after"]["username"] == username]
    assert len(created) == 1


@pytest.mark.parametrize(
    "data, field",
    [
        ({"password": "short", "role": "operator"}, "password"),
        ({"password": "password", "role": "operator"}, "password"),
        ({"password": "12345678", "role": "operator"}, "password"),
        ({"password": "aaaaaaaaaaaa", "role": "operator"}, "password"),
        ({"password": "x" * 257, "role": "operator"}, "password"),
        ({"password": PASSWORD, "role": "manager"}, "role"),
        ({"password": PASSWORD, "role": "root"}, "role"),
        ({"password": PASSWORD}, "role"),
        ({"password": PASSWORD, "role": "operator", "username": "has space"}, "username"),
        ({"password": PASSWORD, "role": "operator", "username": "u" * 65}, "username"),
        ({"password": PASSWORD, "role": "operator", "merchant_id": None}, "merchant_id"),
    ],
)
async def test_a_bad_staff_field_is_400(api, data, field):
    payload = {"username": unique("s")} | data
    status, body = await api.call("POST", STAFF, await api.staff("admin"), json=payload)
    assert status == 400, body
    assert field in body["error"]["details"]["fields"]


async def test_the_password_may_not_be_the_username(api):
    status, body = await api.call("POST", STAFF, await api.staff("admin"), json={"username": "Sam.Jones", "password": "sam.jones", "role": "auditor"})
    assert status == 400
    assert "password" in body["error"]["details"]["fields"]


# ---- merchant users --------------------------------------------------------------------------


@pytest.fixture
async def shop(api):
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    _, manager_token = await api.merchant_user(merchant["id"], "manager")
    return {"merchant": merchant, "store": store, "manager_token": manager_token}


def _users_path(merchant_id: str) -> str:
    return f"/api/v1/merchants/{merchant_id}/users"


@pytest.mark.parametrize("role", ["admin", "operator"])
async def test_bank_staff_create_a_manager_and_a_cashier(api, shop, role):
    merchant_id, store_id = shop["merchant"]["id"], shop["store"]["id"]
    token = await api.staff(role)
    manager = await api.ok("POST", _users_path(merchant_id), token, 201,
                           json={"username": unique("m"), "password": PASSWORD, "role": "manager"})
    assert (manager["role"], manager["merchant_id"], manager["store_id"]) == ("manager", merchant_id, None)
    cashier = await api.ok("POST", _users_path(merchant_id), token, 201,
                           json={"username": unique("c"), "password": PASSWORD, "role": "cashier", "store_id": store_id})
    assert set(cashier) == {"id", "username", "role", "status", "merchant_id", "store_id"}
    assert (cashier["role"], cashier["merchant_id"], cashier["store_id"]) == ("cashier", merchant_id, store_id)

    [entry] = await api.audit_entries(entity_type="user", entity_id=cashier["id"])
    assert (entry["action"], entry["after"], entry["actor"]["role"]) == ("user.create", cashier, role)


async def test_a_manager_creates_users_for_its_own_merchant_only(api, shop):
    merchant_id = shop["merchant"]["id"]
    cashier = await api.ok("POST", _users_path(merchant_id), shop["manager_token"], 201,
                           json={"username": unique("c"), "password": PASSWORD, "role": "cashier", "store_id": shop["store"]["id"]})
    assert cashier["merchant_id"] == merchant_id

    other = await api.merchant()
    other_store = await api.store(other["id"])
    status, body = await api.call("POST", _users_path(other["id"]), shop["manager_token"],
                                  json={"username": unique("c"), "password": PASSWORD, "role": "cashier", "store_id": other_store["id"]})
    assert (status, _code(body)) == (404, "not_found")


async def test_a_cashier_or_auditor_may_not_create_merchant_users(api, shop):
    merchant_id = shop["merchant"]["id"]
    _, cashier_token = await api.merchant_user(merchant_id, "cashier", shop["store"]["id"])
    for token in (cashier_token, await api.staff("auditor")):
        status, body = await api.call("POST", _users_path(merchant_id), token,
                                      json={"username": unique("m"), "password": PASSWORD, "role": "manager"})
        assert (status, _code(body)) == (403, "forbidden")


async def test_a_cashier_needs_a_store_of_that_merchant(api, shop):
    merchant_id = shop["merchant"]["id"]
    other = await api.merchant()
    other_store = await api.store(other["id"])
    operator = await api.staff("operator")
    base = {"password": PASSWORD, "role": "cashier"}
    for store_id, problem in ((None, "required for a cashier"), (other_store["id"], "not a store of this merchant"),
                              ("00000000-0000-0000-0000-000000000000", "not a store of this merchant")):
        data = base | {"username": unique("c")} | ({"store_id": store_id} if store_id else {})
        status, body = await api.call("POST", _users_path(merchant_id), operator, json=data)
        assert status == 400
        assert body["error"]["details"]["fields"] == {"store_id": problem}
    status, body = await api.call("POST", _users_path(merchant_id), operator, json=base | {"username": unique("c"), "store_id": "nope"})
    assert status == 400 and "store_id" in body["error"]["details"]["fields"]


async def test_merchant_user_refusals(api, shop):
    merchant_id = shop["merchant"]["id"]
    operator = await api.staff("operator")
    for role in ("admin", "auditor", "client"):
        status, body = await api.call("POST", _users_path(merchant_id), operator,
                                      json={"username": unique("u"), "password": PASSWORD, "role": role})
        assert status == 400 and "role" in body["error"]["details"]["fields"]
    status, body = await api.call("POST", _users_path(merchant_id), operator,
                                  json={"username": unique("u"), "password": "weak", "role": "manager"})
    assert status == 400 and "password" in body["error"]["details"]["fields"]
    for missing in ("00000000-0000-0000-0000-000000000000", "not-an-id"):
        status, body = await api.call("POST", _users_path(missing), operator,
                                      json={"username": unique("u"), "password": PASSWORD, "role": "manager"})
        assert (status, _code(body)) == (404, "not_found")
    taken, _ = await api.merchant_user(merchant_id, "manager")
    status, body = await api.call("POST", _users_path(merchant_id), operator,
                                  json={"username": taken["username"], "password": PASSWORD, "role": "manager"})
    assert (status, _code(body)) == (409, "conflict")


async def test_listing_a_merchants_users(api, shop):
    merchant_id = shop["merchant"]["id"]
    created = [(await api.merchant_user(merchant_id, "cashier", shop["store"]["id"]))[0] for _ in range(3)]
    first = await api.ok("GET", _users_path(merchant_id), shop["manager_token"], params={"limit": "2"})
    second = await api.ok("GET", _users_path(merchant_id), shop["manager_token"], params={"limit": "2", "cursor": first["next_cursor"]})
    listed = first["items"] + second["items"]
    assert second["next_cursor"] is None
    assert len(listed) == 4 and listed[1:] == created  # the shop's manager came first
    assert all("password" not in str(user) for user in listed)

    other = await api.merchant()
    status, _ = await api.call("GET", _users_path(other["id"]), shop["manager_token"])
    assert status == 404
    assert (await api.call("GET", _users_path(merchant_id), await api.staff("auditor")))[0] == 200


# ---- client sessions -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
async def test_bank_staff_mint_a_client_session(api, config, role):
    client = await api.new_client()
    body = await api.ok("POST", f"/api/v1/clients/{client['id']}/sessions", await api.staff(role), 201)
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", config.client_session_ttl_seconds)

    principal = SessionTokens(config.secret).verify(body["access_token"], datetime.now(timezone.utc))
    assert principal == Principal(id=client["id"], role="client")
    if any(r.resource is not None and r.resource.canonical == "/api/v1/me" for r in api.client.app.router.routes()):
        me = await api.ok("GET", "/api/v1/me", body["access_token"])
        assert me["id"] == client["id"]
    # Accepted as a session, refused for what a client may not do.
    status, error = await api.call("GET", "/api/v1/audit", body["access_token"])
    assert (status, _code(error)) == (403, "forbidden")

    [entry] = [e for e in await api.audit_entries(entity_type="client", entity_id=client["id"]) if e["action"] == "client.session"]
    assert entry["actor"]["role"] == role
    assert entry["after"] == {"client_id": client["id"]}


async def test_client_session_refusals(api):
    client = await api.new_client()
    merchant = await api.merchant()
    _, manager_token = await api.merchant_user(merchant["id"], "manager")
    for token in (await api.staff("auditor"), manager_token):
        status, body = await api.call("POST", f"/api/v1/clients/{client['id']}/sessions", token)
        assert (status, _code(body)) == (403, "forbidden")
    for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
        status, body = await api.call("POST", f"/api/v1/clients/{missing}/sessions", await api.staff("operator"))
        assert (status, _code(body)) == (404, "not_found")
    entries = await api.audit_entries(entity_type="client", entity_id=client["id"])
    assert [e for e in entries if e["action"] == "client.session"] == []
