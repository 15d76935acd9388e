"""Fixtures: a real PostgreSQL (DATABASE_URL or the embedded server), a template database migrated once
per session and cloned for every test, and the application served over real HTTP."""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from perks.app import create_app
from perks.core.config import Config
from perks.core.db import connect, embedded_admin_url, with_database
from perks.core.migrate import migrate_url
from tests.support import Api, SettableClock


@pytest.fixture(scope="session")
def admin_url() -> str:
    """A URL with the right to create databases: DATABASE_URL, else the embedded server's."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    # Outside pytest's temporary root: a concurrent pytest session resets that to 0700, and as root the
    # embedded server runs as its own user. "delete" removes the data when the session's server stops.
    base = Path(tempfile.mkdtemp(prefix="perks-test-db-"))
    atexit.register(shutil.rmtree, base, True)  # runs after the server's own exit handler has stopped it
    return embedded_admin_url(base / "data", cleanup_mode="delete")


async def _create_template(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await migrate_url(with_database(admin_url, name))


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """A database with every migration applied, cloned by each test."""
    name = f"perks_template_{os.getpid()}"
    asyncio.run(_create_template(admin_url, name))
    yield name
    asyncio.run(_drop(admin_url, name))


@pytest.fixture
async def database_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh database for this test, cloned from the migrated template."""
    name = f"perks_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield with_database(admin_url, name)
    await _drop(admin_url, name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to this test's database, for setting up and checking state."""
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def clock() -> SettableClock:
    """The application's clock: real time until a test sets it."""
    return SettableClock()


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Config:
    """The service's configuration for this test."""
    return Config(
        database_url=database_url,
        data_dir=tmp_path,
        timezone=ZoneInfo("Asia/Shanghai"),
        secret="test-secret-" + secrets.token_hex(16),
        max_body_bytes=64 * 1024,
        pool_max_size=20,
    )


@pytest.fixture
async def client(config: Config, clock: SettableClock, aiohttp_client) -> TestClient:
    """The application, served over real HTTP on a local port (closed before its database is dropped)."""
    return await aiohttp_client(create_app(config, clock=clock))


@pytest.fixture
async def api(client: TestClient, db: asyncpg.Connection) -> Api:
    """Helpers to act as each role through the API."""
    return Api(client, db)
