"""Client import: a CSV file (UTF-8, a BOM accepted) upserted on external_ref, all or nothing, every bad line
named; through the API and the command line; names read back exactly."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.points.test_points import role_tokens, run_cli, write_csv

HEADER = ["external_ref", "name", "phone", "birthday", "tier"]
NAMES = ["罗小升", "欧阳娜娜", 'Zoë "Zed" O\'Brien, Jr.', "  Spaced  Name  ", "李"]


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER, bom: bool = True) -> bytes:
    """A CSV file as Python's csv module writes it (CRLF), in UTF-8 with a BOM as Excel saves it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return ("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8")


async def post_csv(api, data: bytes, role: str = "operator", content_type: str = "text/csv; charset=utf-8"):
    return await api.call("POST", "/api/v1/clients/import", await api.staff(role),
                          data=io.BytesIO(data), headers={"Content-Type": content_type})


def view_of(audited: dict, shown: dict) -> dict:
    """The audited client limited to the fields the API shows (the audit may hold more, e.g. an override)."""
    return {name: audited[name] for name in shown}


async def client_by_ref(api, ref: str) -> dict:
    body = await api.ok("GET", f"/api/v1/clients?external_ref={ref}", await api.staff("auditor"))
    assert len(body["items"]) == 1, body
    return body["items"][0]


async def test_import_creates_clients_and_reads_names_back_exactly(api, db):
    await api.tier("gold", name="Gold", rank=1)
    rows = [[f"IMP{n}", name, "+86 138 0000 0000" if n == 0 else "", "1990-02-28" if n == 1 else "",
             "gold" if n < 2 else ""] for n, name in enumerate(NAMES)]
    status, body = await post_csv(api, csv_bytes(rows))
    assert status == 200, body
    assert body == {"received": 5, "created": 5, "updated": 0, "unchanged": 0}
    for n, name in enumerate(NAMES):
        client = await client_by_ref(api, f"IMP{n}")
        assert client["name"] == name
        assert client["status"] == "active"
    first = await client_by_ref(api, "IMP0")
    assert (first["phone"], first["tier"], first["birthday"]) == ("+86 138 0000 0000", "gold", None)
    assert (await client_by_ref(api, "IMP1"))["birthday"] == "1990-02-28"
    assert (await client_by_ref(api, "IMP2"))["tier"] is None

    entries = await api.audit_entries(entity_type="client", entity_id=first["id"])
    assert [e["action"] for e in entries] == ["client.create"]
    assert view_of(entries[0]["after"], first) == first and entries[0]["actor"]["role"] == "operator"

    again_status, again = await post_csv(api, csv_bytes(rows, bom=False))
    assert again_status == 200 and again == {"received": 5, "created": 0, "updated": 0, "unchanged": 5}
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'client.%'") == 5


async def test_import_updates_and_keeps_what_empty_cells_leave_out(api, db):
    await api.tier("silver", name="Silver", rank=1)
    await api.tier("gold", name="Gold", rank=2)
    await post_csv(api, csv_bytes([["U1", "罗升", "010-1234", "1980-01-01", "silver"], ["U2", "王五", "", "", ""]]))
    before = await client_by_ref(api, "U1")

    status, body = await post_csv(api, csv_bytes([["U1", "罗小升", "", "", "gold"], ["U2", "王五", "", "", ""],
                                                  ["U3", "新人", "", "", ""]]))
    assert status == 200 and body == {"received": 3, "created": 1, "updated": 1, "unchanged": 1}
    after = await client_by_ref(api, "U1")
    assert (after["name"], after["phone"], after["birthday"]) == ("罗小升", "010-1234", "1980-01-01")
    assert after["tier"] == "gold"
    assert after["id"] == before["id"]

    entries = await api.audit_entries(entity_type="client", entity_id=before["id"])
    assert [e["action"] for e in entries] == ["client.update", "client.create"]
    assert view_of(entries[0]["before"], before) == before and view_of(entries[0]["after"], after) == after
    changes = (await api.ok("GET", f"/api/v1/clients/{before['id']}/tier-history", await api.staff("admin")))["items"]
    assert [(c["reason"], c["from_tier"], c["to_tier"]) for c in changes] == [("import", "silver", "gold")]


async def test_columns_in_any_order_and_only_the_required_ones(api):
    status, body = await post_csv(api, csv_bytes([["名字", "R1"]], header=["name", "external_ref"]))
    assert status == 200 and body["created"] == 1
    assert (await client_by_ref(api, "R1"))["name"] == "名字"


async def test_a_file_with_bad_lines_changes_nothing_and_names_every_line(api, db):
    await api.tier("gold", name="Gold", rank=1)
    rows = [
        ["OK1", "好人", "", "", "gold"],  # line 2
        ["B1", "", "", "", ""],  # line 3: no name
        ["B2", "某人", "call me", "", ""],  # line 4
        ["B3", "某人", "", "1990-13-01", ""],  # line 5
        ["B4", "某人", "", "2999-01-01", ""],  # line 6
        ["B5", "某人", "", "", "platinum"],  # line 7
        ["OK1", "又一个", "", "", ""],  # line 8
        ["has space", "某人", "", "", ""],  # line 9
        ["B7", "某人", "", "01/02/1990", "Gold!"],  # line 10
    ]
    data = csv_bytes(rows) + b"B8,short\r\n"  # line 11
    status, body = await post_csv(api, data)
    assert status == 400 and body["error"]["code"] == "bad_request"
    details = body["error"]["details"]
    found = {(e["line"], e["field"]) for e in details["errors"]}
    assert found == {
        (3, "name"), (4, "phone"), (5, "birthday"), (6, "birthday"), (7, "tier"), (8, "external_ref"),
        (9, "external_ref"), (10, "birthday"), (10, "tier"), (11, "line"),
    }
    assert details["fields"]["line 7: tier"] == "no such tier"
    assert details["fields"]["line 8: external_ref"] == "repeated: first at line 2"
    assert details["fields"]["line 6: birthday"] == "must not be in the future"
    assert "9 lines not valid" in body["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM clients") == 0


async def test_refused_bodies(api):
    cases = [
        (csv_bytes([["X1", "某人"]], header=["external_ref", "name", "email"]), "text/csv", "line 1: header"),
        (csv_bytes([["X1"]], header=["external_ref"]), "text/csv", "line 1: header"),
        (b"", "text/csv", "line 1: header"),
        (csv_bytes([]), "text/csv", "body"),
        (b"external_ref,name\r\n\xff\xfe,x\r\n", "text/csv", "line 2: line"),
        (csv_bytes([["X1", "某人"]], header=["external_ref", "name"]), "application/json", "body"),
    ]
    for data, content_type, field in cases:
        status, body = await post_csv(api, data, content_type=content_type)
        assert status == 400, (data, body)
        assert field in body["error"]["details"]["fields"], (data, body)
    status, body = await post_csv(api, b"external_ref,name\r\n" + b"x" * (16 * 1024 * 1024))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


async def test_roles_for_client_import(api, db):
    tokens = await role_tokens(api, db)
    data = csv_bytes([["ROLE1", "某人"]], header=["external_ref", "name"])
    for role in ("auditor", "manager", "cashier", "client"):
        status, body = await api.call("POST", "/api/v1/clients/import", tokens[role], data=io.BytesIO(data),
                                      headers={"Content-Type": "text/csv"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await api.call("POST", "/api/v1/clients/import", tokens["admin"], data=io.BytesIO(data),
                                  headers={"Content-Type": "text/csv"})
    assert status == 200 and body["created"] == 1


async def test_cli_imports_clients_from_an_excel_style_file(api, db, config, tmp_path: Path, capsys):
    await api.tier("gold", name="Gold", rank=1)
    rows = [[f"CLI{n}", name, "", "", "gold"] for n, name in enumerate(NAMES)]
    rows += [[f"BULK{n}", f"客户{n}", "", "", ""] for n in range(3000)]
    path = write_csv(tmp_path / "clients.csv", HEADER, rows, bom=True)
    code, out, err = await run_cli(config, ["clients", "import", str(path), "--progress"], capsys)
    assert code == 0, err
    assert "3,005 clients read, 3,005 created, 0 updated, 0 unchanged" in out
    assert "reading clients" in err  # the progress bar
    for n, name in enumerate(NAMES):
        assert (await client_by_ref(api, f"CLI{n}"))["name"] == name
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'client.create'") == 3005
    entry = await db.fetchrow("SELECT actor_role, actor_id FROM audit_log WHERE entity_type = 'client' LIMIT 1")
    assert (entry["actor_role"], entry["actor_id"]) == ("system", None)

    rows[10][3] = "1990-02-30"  # line 12
    write_csv(path, HEADER, rows, bom=True)
    code, out, err = await run_cli(config, ["clients", "import", str(path)], capsys)
    assert code == 1 and out == ""
    assert "line 12: birthday:" in err
    assert await db.fetchval("SELECT count(*) FROM clients") == 3005
