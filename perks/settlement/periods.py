"""Settlement months and report years, and where they begin and end in the bank's time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from perks.core.errors import BadRequest

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
# Far enough either way for any program, near enough that the month after the last one is still a date.
FIRST_YEAR, LAST_YEAR = 2000, 9998


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month: the quota month of the redemptions a statement settles."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str, field: str = "month") -> "Month":
        """``YYYY-MM`` as a month; 400 naming ``field`` otherwise."""
        match = MONTH_PATTERN.match(text or "")
        if not match:
            raise BadRequest({field: "must be a month as YYYY-MM"})
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12:
            raise BadRequest({field: "the month must be 01 to 12"})
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise BadRequest({field: f"the year must be {FIRST_YEAR} to {LAST_YEAR}"})
        return cls(year, month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> "Month":
        """The month after this one."""
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def starts_at(self, tz: ZoneInfo) -> datetime:
        """Midnight of the first day, in the bank's time zone."""
        return datetime(self.year, self.month, 1, tzinfo=tz)

    def ends_at(self, tz: ZoneInfo) -> datetime:
        """Midnight of the first day of the next month, in the bank's time zone."""
        return self.next().starts_at(tz)


def year_bounds(year: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of the quota year in the bank's time zone."""
    return datetime(year, 1, 1, tzinfo=tz), datetime(year + 1, 1, 1, tzinfo=tz)


def year_fraction(instant: datetime, year: int, tz: ZoneInfo) -> float:
    """How far through the quota year ``instant`` is: 0 at its first instant, 1 at its end."""
    start, end = year_bounds(year, tz)
    # Timestamps, not wall-clock differences: a zone with summer time has a year an hour short of 365 days.
    return (instant.timestamp() - start.timestamp()) / (end.timestamp() - start.timestamp())
