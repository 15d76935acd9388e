"""Geometry of the overview's charts, drawn as SVG by the template (no script, no library)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

WIDTH = 340
BAR_HEIGHT = 18
BAR_GAP = 34
COLUMN_CHART_HEIGHT = 160
COLUMN_AREA_TOP = 18
COLUMN_AREA_BOTTOM = 22


@dataclass(frozen=True)
class CapacityBar:
    """One perk's use of the merchant's yearly capacity."""

    perk: str
    name: str
    used: int
    capacity: int | None
    y: int
    width: int


def capacity_bars(items: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> tuple[list[CapacityBar], int]:
    """A bar per perk (used against capacity; without a cap, against the busiest such perk) and the chart's height."""
    items = list(items)
    busiest = max((item["used"] for item in items if item["yearly_capacity"] is None), default=0)
    bars = []
    for index, item in enumerate(items):
        capacity = item["yearly_capacity"]
        scale = capacity if capacity is not None else busiest
        fraction = 1.0 if scale == 0 and item["used"] > 0 else (item["used"] / scale if scale else 0.0)
        bars.append(
            CapacityBar(
                perk=item["perk"],
                name=names.get(item["perk"], item["perk"]),
                used=item["used"],
                capacity=capacity,
                y=index * (BAR_HEIGHT + BAR_GAP) + 18,
                width=round(WIDTH * min(fraction, 1.0)),
            )
        )
    return bars, max(len(bars) * (BAR_HEIGHT + BAR_GAP), BAR_GAP)


@dataclass(frozen=True)
class Column:
    """One month's redemptions as a column."""

    month: int
    count: int
    x: int
    y: int
    width: int
    height: int


def month_columns(counts: Mapping[int, int]) -> list[Column]:
    """Twelve columns, January to December, scaled to the busiest month."""
    slot = WIDTH // 12
    area = COLUMN_CHART_HEIGHT - COLUMN_AREA_TOP - COLUMN_AREA_BOTTOM
    peak = max(counts.values(), default=0)
    columns = []
    for month in range(1, 13):
        count = counts.get(month, 0)
        height = round(area * count / peak) if peak else 0
        columns.append(
            Column(
                month=month,
                count=count,
                x=(month - 1) * slot + 3,
                y=COLUMN_AREA_TOP + area - height,
                width=slot - 6,
                height=height,
            )
        )
    return columns


# The console's wider charts: labelled horizontal bars (one per merchant, perk, tier …) and twelve columns.

CONSOLE_WIDTH = 380


@dataclass(frozen=True)
class LabelledBar:
    """One labelled bar: ``value`` against ``limit`` (or against the largest value when there is no limit)."""

    key: str
    label: str
    value: int
    limit: int | None
    y: int
    width: int


def labelled_bars(
    items: Iterable[tuple[str, str, int, int | None]], width: int = CONSOLE_WIDTH
) -> tuple[list[LabelledBar], int]:
    """Bars for ``(key, label, value, limit)`` items, and the chart's height; an unlimited bar is scaled to the
    largest value, a limit of 0 with use shows full."""
    items = list(items)
    peak = max((value for _, _, value, _ in items), default=0)
    bars = []
    for index, (key, label, value, limit) in enumerate(items):
        scale = limit if limit is not None else peak
        fraction = 1.0 if scale == 0 and value > 0 else (value / scale if scale else 0.0)
        bars.append(LabelledBar(key, label, value, limit, index * (BAR_HEIGHT + BAR_GAP) + 18,
                                round(width * min(fraction, 1.0))))
    return bars, max(len(bars) * (BAR_HEIGHT + BAR_GAP), BAR_GAP)


def wide_month_columns(counts: Mapping[int, int], width: int = CONSOLE_WIDTH) -> list[Column]:
    """Twelve columns for a chart ``width`` wide, January to December, scaled to the busiest month."""
    narrow = month_columns(counts)
    factor = width / WIDTH
    return [
        Column(c.month, c.count, round(c.x * factor), c.y, max(round(c.width * factor), 1), c.height) for c in narrow
    ]
