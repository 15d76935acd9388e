"""The service's sense of time, injected so that tests can stand at any instant."""

from __future__ import annotations

from datetime import datetime, timezone


class Clock:
    """Wall-clock time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current instant."""
        return datetime.now(timezone.utc)
