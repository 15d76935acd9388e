"""docs/schema.sql is the migrated schema as it is now: regenerated here and compared with the committed copy."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from perks.core.schema_doc import describe_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schema.sql"


async def test_schema_file_matches_the_migrated_database(db: asyncpg.Connection):
    current = await describe_schema(db)
    assert "CREATE TABLE redemptions (" in current
    assert SCHEMA_FILE.read_text(encoding="utf-8") == current, "docs/schema.sql is stale: run scripts/schema"
