"""The trailing twelve months over which a client's points count."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo


def year_before(instant: datetime, tz: tzinfo = timezone.utc) -> datetime:
    """The same wall-clock time twelve months earlier in ``tz`` (29 February goes back to 28 February)."""
    local = instant.astimezone(tz)
    try:
        earlier = local.replace(year=local.year - 1)
    except ValueError:
        earlier = local.replace(year=local.year - 1, day=28)
    return earlier.astimezone(timezone.utc)


def points_window(now: datetime, tz: tzinfo = timezone.utc) -> tuple[datetime, datetime]:
    """The trailing twelve months ending at ``now``: events with ``window_from < occurred_at <= window_to`` count,
    so an event exactly twelve months old no longer does."""
    return year_before(now, tz), now.astimezone(timezone.utc)
