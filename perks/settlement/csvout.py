"""CSV downloads that Python's csv module and a spreadsheet both read back exactly, Chinese included."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any, Iterable, Literal, Sequence

from aiohttp import web
from pydantic import Field

from perks.core.validation import Query
from perks.settlement.periods import Month

# Excel takes a UTF-8 file for its local code page unless it starts with a byte-order mark.
BOM = "\ufeff"
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such text gets a leading
# apostrophe, which spreadsheets hide and treat as "text". Numbers are written as numbers, signs and all.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class FormatQuery(Query):
    """``?format=json`` (the default) or ``?format=csv``."""

    format: Literal["json", "csv"] = Field("json", description="`csv` for a spreadsheet download.")


def cell(value: Any) -> Any:
    """One value as a CSV cell: empty for ``None``, RFC 3339 for times, whole floats as integers, text defused of
    formulas."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        # As a spreadsheet writes it back: 50.0 is 50.
        return int(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The header and rows as CSV text: RFC 4180 quoting, CRLF line ends, a byte-order mark first."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
    return out.getvalue()


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> web.Response:
    """A CSV download named ``filename`` (ASCII, built by the caller from ids and dates, never from input)."""
    return web.Response(
        body=csv_text(header, rows).encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def dict_rows(items: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """The ``columns`` of each item, in order."""
    return [[item[column] for column in columns] for item in items]


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
