"""Migrations: every file applies to an empty database, in order, once, even when processes race."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from perks.core.db import with_database
from perks.core.migrate import list_migrations, migrate_url


@pytest.fixture
async def empty_database(admin_url: str):
    name = f"perks_empty_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def test_all_migrations_apply_to_an_empty_database(empty_database: str):
    applied = await migrate_url(empty_database)
    assert [m.version for m in applied] == [m.version for m in list_migrations()]
    assert await migrate_url(empty_database) == []
    conn = await asyncpg.connect(empty_database)
    try:
        recorded = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in recorded] == [m.version for m in list_migrations()]
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(empty_database: str):
    results = await asyncio.gather(*(migrate_url(empty_database) for _ in range(4)))
    applied_counts = sorted(len(r) for r in results)
    assert applied_counts == [0, 0, 0, len(list_migrations())]


def test_migration_files_are_numbered_without_gaps():
    versions = [m.version for m in list_migrations()]
    assert versions == list(range(1, len(versions) + 1))
