"""Quota periods in the bank's time zone, and the birthday month's window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo


def quota_period(instant: datetime, tz: ZoneInfo) -> tuple[int, int]:
    """``(year, month)`` of ``instant`` in the bank's time zone: the quota year and month it counts in."""
    local = instant.astimezone(tz)
    return local.year, local.month


@dataclass(frozen=True)
class Period:
    """The quota year and month an instant counts in, and its local date (grants expire by it)."""

    year: int
    month: int
    today: date

    def of_year(self, year: int) -> Period:
        """The same day looking at another quota year: month 0, which no counter row has (no "this month")."""
        return self if year == self.year else Period(year, 0, self.today)


def period(instant: datetime, tz: ZoneInfo) -> Period:
    """The :class:`Period` of ``instant`` in the bank's time zone."""
    local = instant.astimezone(tz)
    return Period(local.year, local.month, local.date())


def birthday_window(birthday: date | None, year: int, month: int) -> date | None:
    """The first day of the birthday month now under way or next to come (bank time zone); None without a birthday.

    A birthday perk can be used from that day to the end of that month (the rule itself is in ``perks_decide``:
    the month of the birthday, 29 February counting as February)."""
    if birthday is None:
        return None
    if birthday.month >= month:
        return date(year, birthday.month, 1)
    return date(year + 1, birthday.month, 1)
