"""No query value, token, phone or name in any log line, tracebacks included: provoke 500s and read the log."""

from __future__ import annotations

import io
import logging

import pytest
from aiohttp import web

from perks.app import create_app
from perks.core.appkeys import POOL
from perks.core.logs import redact, setup_logging

NAME = "罗小升"
PHONE = "13912345678"
REF = "REF-SECRET-42"
TOKEN = "eyJhbGciOiJFZERTQSIsImtpZCI6ImFiYyJ9.eyJqdGkiOiJ4eHh4eHh4eHh4eHh4eHh4In0.c2lnbmF0dXJl"


@pytest.fixture
def captured_log():
    """The service's own logging set-up, writing into a buffer for this test (then put back)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    setup_logging("INFO", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def _internal_errors(request: web.Request) -> web.Response:
    """A test-only route: one of the ways a bug or a database error surfaces with a person's data in it."""
    kind = request.query["kind"]
    async with request.config_dict[POOL].acquire() as conn:
        if kind == "unique":
            insert = "INSERT INTO clients (external_ref, name, phone) VALUES ($1, $2, $3)"
            await conn.execute(insert, REF, NAME, PHONE)
            await conn.execute(insert, REF, NAME, PHONE)
        elif kind == "check":
            await conn.execute("INSERT INTO clients (external_ref, name, phone) VALUES ($1, $2, $3)",
                               "R" * 70, NAME, PHONE)
        elif kind == "argument":
            await conn.fetchval("SELECT $1::int", PHONE)
        elif kind == "syntax":
            await conn.fetchval("SELECT $1::text::uuid", NAME)
        else:
            int(NAME)
    return web.Response(text="unreachable")


@pytest.mark.parametrize("kind", ["unique", "check", "argument", "syntax", "python"])
async def test_a_500_logs_its_traceback_without_the_values_that_caused_it(aiohttp_client, config, clock,
                                                                           captured_log, kind):
    app = create_app(config, clock=clock)
    app.router.add_get("/test-only/internal-error", _internal_errors)
    client = await aiohttp_client(app)
    params = {"kind": kind, "external_ref": REF, "phone": PHONE, "name": NAME, "access_token": TOKEN}
    async with client.get("/test-only/internal-error", params=params,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "internal_error"
    log = captured_log.getvalue()
    assert "Traceback" in log and "unhandled error" in log, log
    assert "/test-only/internal-error?kind=***" in log, log  # the access line: keys kept, values gone
    for secret in (NAME, PHONE, REF, TOKEN, TOKEN.split(".")[1]):
        assert secret not in log, (secret, log)
    # The database's explanation stays, without its values.
    expected = {"unique": "DETAIL:  Key (external_ref)=(***) already exists.",
                "check": "DETAIL:  Failing row contains (***).",
                "argument": "invalid input for query argument $1: ***"}
    assert expected.get(kind, "Traceback") in log, log


async def test_the_access_log_keeps_query_keys_and_drops_values(client, captured_log):
    async with client.get("/readyz", params={"access_token": TOKEN, "external_ref": REF}) as response:
        assert response.status == 200
    [line] = [line for line in captured_log.getvalue().splitlines() if "aiohttp.access" in line]
    assert "/readyz?access_token=***&external_ref=***" in line
    assert REF not in line and TOKEN not in line


@pytest.mark.parametrize("text, hidden", [
    ("headers {'Authorization': 'Bearer abc.def.ghi'}", "abc.def.ghi"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("Cookie: perks_session=s3cr3t", "s3cr3t"),
    (f"sent to +86 {PHONE}", PHONE),
    (f"voucher {TOKEN} scanned", TOKEN),
    (f"DETAIL:  Key (client_id, perk_code)=(1, {NAME}) is not present in table", NAME),
    (f'DETAIL:  Token "{NAME}" is invalid.', NAME),
])
def test_redaction_of_what_a_line_may_carry(text, hidden):
    assert hidden not in redact(text)


def test_redaction_keeps_what_an_operator_needs():
    line = '127.0.0.1 "GET /api/v1/merchants HTTP/1.1" 200 512 0.004s rid=3f2a'
    assert redact(line) == line
    assert redact("Key (external_ref)=(C1) already exists.") == "Key (external_ref)=(***) already exists."
