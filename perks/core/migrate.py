"""Forward-only SQL migrations: numbered files applied in order, each once, each in a transaction."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every process that migrates this database.
ADVISORY_LOCK_ID = 7_265_733_210_001
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
RECORD_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations_dir() -> Path:
    """Where the SQL files are: inside the installed package, or the source tree's ``migrations/``."""
    package_dir = Path(__file__).resolve().parent.parent
    shipped = package_dir / "migrations"
    if shipped.is_dir():
        return shipped
    return package_dir.parent / "migrations"


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration file, in version order."""
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise ValueError(f"migration file name not understood: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return found


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the migrations this database lacks; concurrent callers wait on an advisory lock."""
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
    try:
        await conn.execute(CREATE_LEDGER)
        applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        done = []
        for migration in list_migrations(directory):
            if migration.version in applied:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            async with conn.transaction():
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute(RECORD_APPLIED, migration.version, migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)


async def migrate_url(url: str) -> list[Migration]:
    """Connect to ``url`` and migrate that database."""
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
