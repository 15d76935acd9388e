"""Signing keys: forgeries refused, the JWKS, keys encrypted at rest, start-up races and rotation across processes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import sys
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from perks.app import create_app
from perks.vouchers.appkeys import KEYRING
from perks.core.clock import Clock
from perks.core.db import connect
from perks.core.errors import DatabaseUnavailable, Refusal
from perks.vouchers.keyring import KeyRing
from perks.vouchers.keys import KeyDecryptionError, decrypt_private_key, ensure_active_key, load_keys, rotate_keys
from perks.vouchers.setup import LISTENER_APPLICATION_NAME
from tests.pg_proxy import PgProxy


@pytest.fixture
def config(config):
    """The test configuration with the terminal rate limit out of the way: the rotation test below scans with one
    cashier far faster than any till (the limit has tests of its own)."""
    return dataclasses.replace(config, terminal_rate_limit_per_minute=1_000_000)

JWKS = "/.well-known/jwks.json"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def part(value: Any) -> str:
    """A JWS segment of a JSON value, as compact as PyJWT writes it (so that length never decides a case)."""
    return b64(json.dumps(value, separators=(",", ":")).encode())


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None) -> str:
    """A hand-made JWS: whatever header and claims, signed by ``sign`` (or unsigned)."""
    signing_input = f"{part(header)}.{part(claims)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def active_key(db, config) -> tuple[str, Ed25519PrivateKey]:
    row = await db.fetchrow("SELECT kid, private_key_encrypted FROM signing_keys WHERE retired_at IS NULL")
    return row["kid"], decrypt_private_key(config, row["kid"], row["private_key_encrypted"])


async def voucher_of_new_client(api, **perk_fields: Any) -> dict[str, Any]:
    _, token, perk = await api.entitled_client(perk=perk_fields)
    return await api.voucher(token, perk["code"])


def assert_invalid(ring: KeyRing, token: Any, case: str) -> None:
    with pytest.raises(Refusal) as refused:
        ring.verify(token)
    assert (refused.value.code, refused.value.status) == ("invalid_token", 400), case


async def test_forgeries_are_all_invalid_tokens(api, client, db, config):
    ring = client.app[KEYRING]
    voucher = await voucher_of_new_client(api)
    genuine = voucher["token"]
    assert ring.verify(genuine).jti == voucher["id"]
    header_part, payload_part, signature_part = genuine.split(".")
    kid, private_key = await active_key(db, config)
    public_raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_pem = private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    claims = {"jti": voucher["id"], "iat": 1_800_000_000, "exp": 1_800_000_300}
    # Short timestamps leave room for each flaw within the 213 characters (so length never decides a case).
    short_claims = {"jti": voucher["id"], "iat": 1000, "exp": 2000}
    stranger = Ed25519PrivateKey.generate()

    def ours(extra_header: dict[str, Any] | None = None, **claim_changes: Any) -> str:
        body = short_claims | claim_changes
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, private_key, algorithm="EdDSA", headers={"kid": kid, "typ": None, **(extra_header or {})})

    # The last signature character carries 4 padding bits: flipping one spells the same bytes differently.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature_part[-1])
    respelled = signature_part[:-1] + alphabet[last ^ 1]
    tampered_claims = {**json.loads(base64.urlsafe_b64decode(payload_part + "==")), "exp": 4_000_000_000}
    tampered_signature = ("B" if signature_part[0] == "A" else "A") + signature_part[1:]
    # The helpers make genuine tokens when nothing is changed.
    assert ring.verify(ours()).jti == voucher["id"]
    assert ring.verify(compact({"alg": "EdDSA", "kid": kid}, claims, private_key.sign)).jti == voucher["id"]
    assert respelled != signature_part

    forgeries = {
        "alg none": compact({"alg": "none", "kid": kid}, claims, None),
        "alg none, genuine signature kept": f"{part({'alg': 'none', 'kid': kid})}.{payload_part}.{signature_part}",
        "HS256 keyed with the raw public key": compact({"alg": "HS256", "kid": kid}, claims, hs256(public_raw)),
        "HS256 keyed with the PEM public key": compact({"alg": "HS256", "kid": kid}, claims, hs256(public_pem)),
        "HS256 keyed with the JWK x": compact({"alg": "HS256", "kid": kid}, claims, hs256(b64(public_raw).encode())),
        "a session token": await api.client_session((await api.new_client())["id"]),
        "tampered payload": f"{header_part}.{part(tampered_claims)}.{signature_part}",
        "tampered signature": f"{header_part}.{payload_part}.{tampered_signature}",
        "signature spelled differently": f"{header_part}.{payload_part}.{respelled}",
        "unknown kid": jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "ZZZZZZZZ", "typ": None}),
        "our kid, another key": jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": kid, "typ": None}),
        "typ header": ours({"typ": "JWT"}),
        "jku header": ours({"jku": "h"}),
        "embedded jwk": ours({"jwk": {}}),
        "extra claim": ours(sub="x"),
        "audience claim": ours(aud="p"),
        "missing exp": ours(exp=None),
        "missing jti": ours(jti=None),
        "iat as text": ours(iat="1000"),
        "exp as float": ours(exp=2000.5),
        "exp before iat": ours(exp=999),
        "long jti": ours(jti="A" * 17),
        "jti with a newline": ours(jti="A" * 16 + "\n"),
        "kid as a number": compact({"alg": "EdDSA", "kid": 12345678}, short_claims, private_key.sign),
        "kid as a list": compact({"alg": "EdDSA", "kid": [kid]}, short_claims, private_key.sign),
        "empty": "",
        "garbage": "garbage",
        "three dots": "a.b.c",
        "dots only": "..",
        "too long": genuine + "A" * 10,
        "trailing dot": genuine + ".",
        "non-ASCII": "é.é.é",
        "whitespace": f" {genuine}",
        "JSON array header": f"{part([1])}.{payload_part}.{signature_part}",
    }
    for case, token in forgeries.items():
        assert_invalid(ring, token, case)
    # Each forgery of our format fails on its flaw, not merely on the length limit.
    over_length = {case: len(token) for case, token in forgeries.items() if len(token) > 213}
    assert set(over_length) == {"a session token", "too long"}, over_length
    for not_text in (None, 42, b"bytes", ["a"]):
        assert_invalid(ring, not_text, repr(not_text))


async def test_verify_leaves_expiry_to_the_redeemer(api, client, clock):
    voucher = await voucher_of_new_client(api, voucher_ttl_seconds=30)
    clock.advance(days=2)
    claims = client.app[KEYRING].verify(voucher["token"])
    assert claims.exp - claims.iat == 30


def test_an_unloaded_ring_signs_and_verifies_nothing():
    ring = KeyRing(Clock())
    with pytest.raises(DatabaseUnavailable):
        ring.verify("a.b.c")
    with pytest.raises(DatabaseUnavailable):
        ring.sign("A" * 16, 1_800_000_000, 1_800_000_300)
    with pytest.raises(DatabaseUnavailable):
        ring.jwks()


async def test_jwks_verifies_a_voucher_with_another_jose_library(api, client):
    voucher = await voucher_of_new_client(api)
    async with client.get(JWKS) as response:
        assert response.status == 200
        cache = response.headers["Cache-Control"]
        document = await response.json()
    assert "no-store" not in cache and 0 < int(cache.split("max-age=")[1]) <= 300
    [key] = document["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert key["kid"] == client.app[KEYRING].active_kid
    with warnings.catch_warnings():
        # joserfc notes that RFC 9864 prefers the fully specified "Ed25519"; the contract names "EdDSA".
        warnings.simplefilter("ignore", SecurityWarning)
        decoded = jose_jwt.decode(voucher["token"], KeySet.import_key_set(document), algorithms=["EdDSA"])
    assert decoded.header == {"alg": "EdDSA", "kid": key["kid"]}
    assert decoded.claims["jti"] == voucher["id"]


async def test_private_keys_are_encrypted_at_rest(client, db, config):
    await rotate_keys(db, config)
    rows = await db.fetch("SELECT kid, public_key, private_key_encrypted FROM signing_keys")
    assert len(rows) == 2
    for row in rows:
        private_key = decrypt_private_key(config, row["kid"], row["private_key_encrypted"])
        raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        assert raw not in row["private_key_encrypted"] and pem not in row["private_key_encrypted"]
        assert private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == row["public_key"]
        other = dataclasses.replace(config, secret="another-secret-of-some-length")
        with pytest.raises(KeyDecryptionError):
            decrypt_private_key(other, row["kid"], row["private_key_encrypted"])
        # The kid is bound in: a ciphertext moved to another row does not decrypt.
        with pytest.raises(KeyDecryptionError):
            decrypt_private_key(config, "AAAAAAAA", row["private_key_encrypted"])


async def test_workers_starting_at_once_make_one_active_key(database_url, config, db):
    connections = [await connect(database_url) for _ in range(8)]
    try:
        kids = await asyncio.gather(*(ensure_active_key(conn, config) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    assert len(set(kids)) == 1
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'signing_key.create'") == 1


async def test_two_instances_starting_at_once_share_one_key(aiohttp_client, config, clock, db):
    first, second = await asyncio.gather(
        aiohttp_client(create_app(config, clock=clock)), aiohttp_client(create_app(config, clock=clock))
    )
    assert first.app[KEYRING].active_kid == second.app[KEYRING].active_kid is not None
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == 1


async def test_rotation_publishes_the_new_key_everywhere_before_any_instance_signs_with_it(
        aiohttp_client, client, api, db, config, clock):
    second = await aiohttp_client(create_app(config, clock=clock))
    rings = [client.app[KEYRING], second.app[KEYRING]]
    old_voucher = await voucher_of_new_client(api)
    old_kid = rings[0].active_kid

    new_kid = await rotate_keys(db, config, lead_seconds=3)
    assert new_kid != old_kid and len(new_kid) == 8
    await wait_until(lambda: all(new_kid in ring.kids() for ring in rings))
    # Published by both instances, in the JWKS too, yet neither signs with it before its instant.
    assert [ring.active_kid for ring in rings] == [old_kid, old_kid]
    for app_client in (client, second):
        async with app_client.get(JWKS) as response:
            assert [key["kid"] for key in (await response.json())["keys"]] == [old_kid, new_kid]
    activates_at = await db.fetchval("SELECT activates_at FROM signing_keys WHERE kid = $1", new_kid)
    assert await db.fetchval("SELECT retired_at FROM signing_keys WHERE kid = $1", old_kid) == activates_at

    await wait_until(lambda: all(ring.active_kid == new_kid for ring in rings), seconds=6)
    for ring in rings:
        assert ring.verify(old_voucher["token"]).kid == old_kid
    new_voucher = await voucher_of_new_client(api)
    assert rings[1].verify(new_voucher["token"]).kid == new_kid

    [entry] = await api.audit_entries(entity_type="signing_key", entity_id=new_kid)
    assert (entry["action"], entry["actor"]["role"]) == ("signing_key.rotate", "system")
    assert entry["before"]["kid"] == old_kid and entry["before"]["retired_at"]
    assert "private_key_encrypted" not in json.dumps(entry)


async def test_rotation_under_load_across_two_instances_refuses_no_voucher(aiohttp_client, client, api, db, config, clock):
    """Vouchers minted on one instance are scanned on the other, continuously, across a rotation's switch."""
    from tests.support import Api

    second = await aiohttp_client(create_app(config, clock=clock))
    apis = [api, Api(second, db)]
    program = await api.program(yearly_quota=None)
    members = [await api.member(program["tier"]) for _ in range(6)]
    old_kid = client.app[KEYRING].active_kid
    kids: set[str] = set()
    refusals: list[Any] = []

    async def mint_here_scan_there(n: int, until: float) -> None:
        _, token = members[n]
        minting, scanning = apis[n % 2], apis[(n + 1) % 2]
        while asyncio.get_running_loop().time() < until:
            voucher = await minting.voucher(token, program["perk"])
            kids.add(json.loads(base64.urlsafe_b64decode(voucher["token"].split(".")[0] + "=="))["kid"])
            status, body = await scanning.call("POST", "/api/v1/merchant/scan", program["cashier"],
                                               json={"token": voucher["token"]})
            if status != 200:
                refusals.append((status, body))

    new_kid = await rotate_keys(db, config, lead_seconds=1.5)
    until = asyncio.get_running_loop().time() + 4
    await asyncio.gather(*(mint_here_scan_there(n, until) for n in range(len(members))))
    assert refusals == []
    assert kids == {old_kid, new_kid}


async def test_retired_key_leaves_the_jwks_only_after_the_longest_voucher_ttl(api, client, db, config, clock):
    await api.perk(voucher_ttl_seconds=60)
    old_voucher = await voucher_of_new_client(api, voucher_ttl_seconds=900)
    ring = client.app[KEYRING]
    old_kid = ring.active_kid
    new_kid = await rotate_keys(db, config, lead_seconds=0)
    await wait_until(lambda: ring.active_kid == new_kid)
    retired_at = await db.fetchval("SELECT retired_at FROM signing_keys WHERE kid = $1", old_kid)

    # 900 s, the longest TTL of any perk, plus the redeemer's 10 s leeway.
    clock.set(retired_at + timedelta(seconds=909))
    assert ring.kids() == [old_kid, new_kid]
    assert ring.verify(old_voucher["token"]).kid == old_kid
    assert [key.kid for key in await load_keys(db, config, clock.now())] == [old_kid, new_kid]

    clock.set(retired_at + timedelta(seconds=910))
    assert [key["kid"] for key in (await api.ok("GET", JWKS, None))["keys"]] == [new_kid]
    assert_invalid(ring, old_voucher["token"], "a voucher of a key past its retention")
    assert [key.kid for key in await load_keys(db, config, clock.now())] == [new_kid]


async def test_cli_rotation_reaches_the_running_service(client, config, api, clock):
    ring = client.app[KEYRING]
    old_kid = ring.active_kid
    env = {**os.environ, "DATABASE_URL": config.database_url, "PERKS_SECRET": config.secret,
           "PERKS_DATA_DIR": str(config.data_dir)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perks", "keys", "rotate",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output
    line = output.decode().strip().splitlines()[-1]
    new_kid = line.split()[3].rstrip(":")
    assert new_kid != old_kid and "published now, signing from" in line
    await wait_until(lambda: ring.kids() == [old_kid, new_kid])
    # Two minutes of pre-publication by default: the service still signs with the old key.
    assert ring.active_kid == old_kid
    activates_at = datetime.fromisoformat(line.rsplit(" ", 1)[-1])
    assert timedelta(seconds=110) < activates_at - clock.now() <= timedelta(seconds=120)


LISTENERS = """
SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()
"""


async def test_the_ring_reconnects_when_its_listening_connection_is_lost(client, db, config):
    ring = client.app[KEYRING]

    async def listeners() -> list[int]:
        return [row["pid"] for row in await db.fetch(LISTENERS, LISTENER_APPLICATION_NAME)]

    deadline = asyncio.get_running_loop().time() + 5
    while not (pids := await listeners()):
        assert asyncio.get_running_loop().time() < deadline, "no listening connection"
        await asyncio.sleep(0.05)
    await db.execute("SELECT pg_terminate_backend($1)", pids[0])

    # Rotated while the listener is away: the notification is lost, the reload on reconnecting catches it.
    new_kid = await rotate_keys(db, config, lead_seconds=0)
    await wait_until(lambda: ring.active_kid == new_kid, seconds=10)
    new_pids = await listeners()
    assert new_pids and pids[0] not in new_pids


async def test_keys_are_made_at_start_with_an_audit_entry(client, db):
    row = await db.fetchrow("SELECT kid, retired_at, created_at FROM signing_keys")
    assert row["retired_at"] is None and client.app[KEYRING].active_kid == row["kid"]
    assert row["created_at"] <= datetime.now(timezone.utc)
    entry = await db.fetchrow("SELECT actor_role, action FROM audit_log WHERE entity_id = $1", row["kid"])
    assert (entry["actor_role"], entry["action"]) == ("system", "signing_key.create")


async def test_starts_while_the_database_is_away_and_loads_keys_when_it_returns(aiohttp_client, config, clock):
    proxy = PgProxy(config.database_url)
    await proxy.start()
    await proxy.stop()
    try:
        away = await aiohttp_client(create_app(dataclasses.replace(config, database_url=proxy.url), clock=clock))
        ring = away.app[KEYRING]
        assert not ring.loaded
        async with away.get(JWKS) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "database_unavailable"

        await proxy.start()
        await wait_until(lambda: ring.active_kid is not None, seconds=15)
        async with away.get(JWKS) as response:
            assert [key["kid"] for key in (await response.json())["keys"]] == [ring.active_kid]
    finally:
        await proxy.stop()


async def _perks_cli(config, *args: str, **env: str) -> tuple[int, str]:
    environ = {**os.environ, "DATABASE_URL": config.database_url, "PERKS_SECRET": config.secret,
               "PERKS_DATA_DIR": str(config.data_dir), **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perks", *args, env=environ, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_secret_rotation_reencrypts_every_key_and_a_restart_on_the_new_secret_serves_on(
        aiohttp_client, client, api, db, config, clock):
    old_voucher = await voucher_of_new_client(api)
    old_session = await api.staff("auditor")
    await rotate_keys(db, config, lead_seconds=0)
    kids = [key.kid for key in await load_keys(db, config, clock.now())]
    new_config = dataclasses.replace(config, secret="the-next-secret-" + os.urandom(8).hex())

    code, output = await _perks_cli(config, "secret", "rotate", PERKS_NEW_SECRET=new_config.secret)
    assert code == 0, output
    assert "re-encrypted 2 signing key(s)" in output
    with pytest.raises(KeyDecryptionError):
        await load_keys(db, config, clock.now())
    assert [key.kid for key in await load_keys(db, new_config, clock.now())] == kids
    [entry] = [e for e in await api.audit_entries(entity_type="signing_key") if e["action"] == "secret.rotate"]
    assert entry["after"]["reencrypted_kids"] == sorted(entry["after"]["reencrypted_kids"], key=kids.index)
    assert config.secret not in json.dumps(entry) and new_config.secret not in json.dumps(entry)

    # The service restarted with the new secret: the same keys verify old vouchers and sign new ones;
    # sessions signed under the old secret are refused (their holders log in again).
    restarted = await aiohttp_client(create_app(new_config, clock=clock))
    ring = restarted.app[KEYRING]
    assert ring.verify(old_voucher["token"]).jti
    assert ring.active_kid == kids[-1]
    async with restarted.get("/api/v1/audit", headers={"Authorization": f"Bearer {old_session}"}) as response:
        assert response.status == 401


async def test_secret_rotation_with_the_wrong_current_secret_changes_nothing(client, db, config, clock):
    before = await db.fetch("SELECT kid, private_key_encrypted FROM signing_keys ORDER BY kid")
    wrong = dataclasses.replace(config, secret="not-the-secret-at-all-" + os.urandom(4).hex())
    code, output = await _perks_cli(wrong, "secret", "rotate", PERKS_NEW_SECRET="another-secret-" + os.urandom(8).hex())
    assert code == 1 and "nothing changed" in output, output
    assert await db.fetch("SELECT kid, private_key_encrypted FROM signing_keys ORDER BY kid") == before
    code, output = await _perks_cli(config, "secret", "rotate")
    assert code == 2 and "PERKS_NEW_SECRET" in output
