"""Bulk loading in one transaction: rows copied into a staging table in chunks, and how long a bulk statement may
take."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import asyncpg

# Big enough that COPY's round trips do not count, small enough that a lazy reader's rows never pile up in memory.
COPY_CHUNK = 20_000
# A file of a million rows takes longer than the pool's 30-second command timeout allows a request.
BULK_TIMEOUT_SECONDS = 600


async def copy_in_chunks(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    records: Iterable[Sequence[Any]],
    on_copied: Callable[[int], Any] | None = None,
) -> int:
    """COPY ``records`` (perhaps a lazy reader) into ``table``'s ``columns``, ``COPY_CHUNK`` rows at a time; how
    many were copied. ``on_copied(n)`` hears of each chunk."""
    copied = 0
    chunk: list[Sequence[Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= COPY_CHUNK:
            copied += await _copy(conn, table, columns, chunk, on_copied)
            chunk = []
    if chunk:
        copied += await _copy(conn, table, columns, chunk, on_copied)
    return copied


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    chunk: list[Sequence[Any]],
    on_copied: Callable[[int], Any] | None,
) -> int:
    await conn.copy_records_to_table(table, records=chunk, columns=columns)
    if on_copied:
        on_copied(len(chunk))
    return len(chunk)
