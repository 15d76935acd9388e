"""A background task that lives as long as the application: started when it starts serving, cancelled and
awaited when it stops (so that no task outlives its pool or its loop)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Coroutine


class running:  # noqa: N801 - used as ``async with running(...)``, like a function
    """``async with running(work, name)``: ``work`` runs as a task named ``name`` while inside; on the way out it
    is cancelled and waited for.

    A class rather than a generator-based context manager: a cleanup context that is closed from outside (its
    generator finalized at the loop's shutdown) must be able to wait for the task without a second generator
    being thrown into."""

    def __init__(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        self._work, self._name = work, name
        self.task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> asyncio.Task[Any]:
        self.task = asyncio.create_task(self._work, name=self._name)
        return self.task

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
