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
