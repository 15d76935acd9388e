"""The migrated schema written out whole, table by table, for a reader (``docs/schema.sql``).

The migrations are the truth and stay forward-only; this file is generated from a database they migrated, so that
a reader sees each table as it is now instead of adding up every ALTER. A test regenerates it and fails when the
committed copy is stale: run ``scripts/schema`` after adding a migration.

The text is built from the catalogue functions (``format_type``, ``pg_get_constraintdef``, ``pg_get_indexdef``)
rather than ``pg_dump``, whose output changes with the client's version; PostgreSQL 18's NOT NULL constraint rows
are left out, since the column lines already say NOT NULL, and views show their columns, not their query text
(which versions print differently).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from perks.core.db import connect

HEADER = (
    "-- Generated from a database with every migration applied: scripts/schema rewrites it, and a test checks it.\n"
    "-- Read it to see each table whole; change the schema with a new file in migrations/, never here.\n"
)

SELECT_TABLES = """
SELECT c.oid, c.relname, c.relpersistence = 'u' AS unlogged, array_to_string(c.reloptions, ', ') AS options
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""
SELECT_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr, a.attidentity::text AS identity
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
SELECT_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE conrelid = $1 AND contype <> 'n'
ORDER BY position(contype::text in 'pufcx'), conname
"""
SELECT_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
WHERE i.indrelid = $1
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
"""
SELECT_VIEWS = """
SELECT c.oid, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'v'
ORDER BY c.relname
"""
SELECT_DOMAINS = """
SELECT t.typname, format_type(t.typbasetype, t.typtypmod) AS base,
       (SELECT string_agg(pg_get_constraintdef(c.oid), ' ' ORDER BY c.conname)
        FROM pg_constraint c WHERE c.contypid = t.oid) AS checks
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype = 'd'
ORDER BY t.typname
"""
SELECT_FUNCTIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS signature,
       pg_get_function_result(p.oid) AS result
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
ORDER BY 1
"""
SELECT_TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS definition
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""


def _column_line(row: asyncpg.Record) -> str:
    parts = [f"    {row['attname']} {row['type']}"]
    if row["identity"] in ("a", "d"):
        parts.append("GENERATED " + ("ALWAYS" if row["identity"] == "a" else "BY DEFAULT") + " AS IDENTITY")
    if row["attnotnull"]:
        parts.append("NOT NULL")
    if row["default_expr"] is not None:
        parts.append(f"DEFAULT {row['default_expr']}")
    return " ".join(parts)


async def describe_schema(conn: asyncpg.Connection) -> str:
    """The public schema of ``conn``'s database as readable SQL: domains, tables, indexes, views, functions, triggers."""
    out = [HEADER]
    for domain in await conn.fetch(SELECT_DOMAINS):
        checks = f" {domain['checks']}" if domain["checks"] else ""
        out.append(f"CREATE DOMAIN {domain['typname']} AS {domain['base']}{checks};\n")
    for table in await conn.fetch(SELECT_TABLES):
        lines = [_column_line(column) for column in await conn.fetch(SELECT_COLUMNS, table["oid"])]
        lines += [
            f"    CONSTRAINT {c['conname']} {c['definition']}"
            for c in await conn.fetch(SELECT_CONSTRAINTS, table["oid"])
        ]
        unlogged = "UNLOGGED " if table["unlogged"] else ""
        options = f" WITH ({table['options']})" if table["options"] else ""
        out.append(f"\nCREATE {unlogged}TABLE {table['relname']} (\n" + ",\n".join(lines) + f"\n){options};\n")
        out += [f"{index['definition']};\n" for index in await conn.fetch(SELECT_INDEXES, table["oid"])]
    for view in await conn.fetch(SELECT_VIEWS):
        # The columns only: PostgreSQL versions print a view's query differently (its text is in the migration).
        columns = ",\n".join(f"    {c['attname']} {c['type']}" for c in await conn.fetch(SELECT_COLUMNS, view["oid"]))
        out.append(f"\n-- A view; its query is in the migration that made it.\nCREATE VIEW {view['relname']} (\n{columns}\n);\n")
    functions = await conn.fetch(SELECT_FUNCTIONS)
    if functions:
        out.append("\n-- Functions (bodies in their migrations):\n")
        out += [f"--   {f['signature']} RETURNS {f['result']}\n" for f in functions]
    triggers = await conn.fetch(SELECT_TRIGGERS)
    if triggers:
        out.append("\n")
        out += [f"{t['definition']};\n" for t in triggers]
    return "".join(out)


async def _main(url: str, target: Path) -> None:
    conn = await connect(url)
    try:
        target.write_text(await describe_schema(conn), encoding="utf-8")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], Path(sys.argv[2])))
