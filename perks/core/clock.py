"""The service's sense of time, injected so that tests can stand at any instant, and the bounds of a local day."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo


class Clock:
    """Wall-clock time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current instant."""
        return datetime.now(timezone.utc)



def midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in time zone ``tz`` (the bank's)."""
    return datetime.combine(day, time(0), tzinfo=tz)


def date_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Midnight to midnight of ``day`` in time zone ``tz``: the instants ``[start, end)`` that fall on it."""
    return midnight(day, tz), midnight(day + timedelta(days=1), tz)


def start_of_day(instant: datetime, tz: ZoneInfo) -> datetime:
    """Midnight of ``instant``'s day in time zone ``tz`` (the bank's)."""
    return midnight(instant.astimezone(tz).date(), tz)


def day_bounds(instant: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Midnight to midnight of ``instant``'s day in time zone ``tz`` (the bank's)."""
    return date_bounds(instant.astimezone(tz).date(), tz)
