"""A monthly statement as a CSV download: its lines, then a total row, months split into a year and a month."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from perks.core.csvfiles import csv_response
from perks.settlement.periods import Month

STATEMENT_CSV_COLUMNS = (
    "merchant_name", "year", "month", "status", "kind", "store_id", "store_name", "perk", "perk_name", "source_year",
    "source_month", "unit_price_fen", "count", "amount_fen",
)


def statement_csv(statement: dict[str, Any]) -> web.Response:
    """A statement as CSV: one row per line, then a `total` row with the net count and amount."""
    month = Month.parse(statement["month"])
    prefix = [statement["merchant_name"], month.year, month.month, statement["status"]]
    rows = []
    for line in statement["lines"]:
        source = Month.parse(line["source_month"]) if line["source_month"] else None
        rows.append(prefix + [
            line["kind"], line["store_id"], line["store_name"], line["perk"], line["perk_name"],
            source.year if source else None, source.month if source else None,
            line["unit_price_fen"], line["count"], line["amount_fen"],
        ])
    totals = statement["totals"]
    rows.append(prefix + ["total", *[None] * 7, totals["count"], totals["amount_fen"]])
    filename = f"statement-{statement['merchant_id']}-{month}.csv"
    return csv_response(filename, STATEMENT_CSV_COLUMNS, rows)
