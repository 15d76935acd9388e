"""HTTP: monthly statements per merchant, the month's settlement across merchants, finalizing a statement."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_ADMINS, BANK_STAFF_AND_MANAGERS, BANK_STAFF_READERS, ensure_merchant_scope
from perks.core.csvfiles import FormatQuery, csv_response, dict_rows
from perks.core.endpoint import endpoint, principal_of
from perks.core.fields import MONTH_PATTERN
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.settlement import service
from perks.settlement.periods import Month
from perks.settlement.statement_csv import statement_csv

routes = web.RouteTableDef()


class MonthQuery(FormatQuery):
    month: str = Field(description="The quota month, `YYYY-MM`.", json_schema_extra={"pattern": MONTH_PATTERN})


class StatementLine(BaseModel):
    kind: Literal["redemption", "adjustment"]
    store_id: str
    store_name: str
    perk: str
    perk_name: str
    source_month: str | None = Field(
        description="For an adjustment: the finalized month whose redemptions were voided after finalizing."
    )
    unit_price_fen: int = Field(description="The price recorded on the redemptions.")
    count: int = Field(description="Redemptions; negative for an adjustment.")
    amount_fen: int = Field(description="`count` × `unit_price_fen`; negative for an adjustment.")


class StatementTotals(BaseModel):
    redeemed_count: int
    redeemed_fen: int
    adjustment_count: int = Field(description="Zero or negative.")
    adjustment_fen: int = Field(description="Zero or negative.")
    count: int = Field(description="Net: redeemed plus adjustments.")
    amount_fen: int = Field(description="Net: what the bank owes the merchant for this statement.")


class StatementView(BaseModel):
    merchant_id: str
    merchant_name: str
    month: str
    status: Literal["open", "finalized"]
    finalized_at: datetime | None
    lines: list[StatementLine]
    totals: StatementTotals


class SettlementItem(StatementTotals):
    merchant_id: str
    merchant_name: str
    status: Literal["open", "finalized"]
    finalized_at: datetime | None


class SettlementView(BaseModel):
    month: str
    items: list[SettlementItem]
    totals: StatementTotals


TOTAL_COLUMNS = ("redeemed_count", "redeemed_fen", "adjustment_count", "adjustment_fen", "count", "amount_fen")
SETTLEMENT_COLUMNS = ("merchant_id", "merchant_name", "status", "finalized_at") + TOTAL_COLUMNS
# Months as a year and a month number: a spreadsheet turns a cell like `2026-05` into a date.


def _month(request: web.Request) -> Month:
    return Month.parse(request.match_info["month"])




@routes.get("/api/v1/merchants/{merchant_id}/statements/{month}")
@endpoint(
    roles=BANK_STAFF_AND_MANAGERS,
    query=FormatQuery,
    response=StatementView,
    alternatives=("text/csv",),
    errors=("not_found",),
    tag="settlement",
)
async def get_statement(request: web.Request, query: FormatQuery) -> web.StreamResponse:
    """A merchant's statement for a month (`YYYY-MM`, the redemptions' quota month).

    One line per store, perk and unit price recorded on the redemptions, voided ones left out. While the month
    is open, voids of finalized earlier months (made after they were finalized) appear here as negative
    `adjustment` lines. A finalized statement is a snapshot and never changes. A manager reads its own
    merchant's only (another's: 404).

    With `?format=csv`: a `text/csv` download, UTF-8 with a byte-order mark (so that spreadsheets read Chinese
    correctly), CRLF line ends, named by `Content-Disposition`; the lines, then a `total` row. Months are split
    into `year` and `month` numbers (a spreadsheet would turn `2026-05` into a date); text cells a spreadsheet
    would run as a formula (starting `=`, `+`, `-`, `@`) get a leading `'`."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    ensure_merchant_scope(principal_of(request), merchant_id)
    month = _month(request)
    async with request.config_dict[POOL].acquire() as conn:
        statement = await service.get_statement(conn, merchant_id, month)
    if query.format == "csv":
        return statement_csv(statement)
    return json_response(statement)


@routes.post("/api/v1/merchants/{merchant_id}/statements/{month}/finalize")
@endpoint(
    roles=BANK_ADMINS, response=StatementView, errors=("bad_request", "not_found", "conflict"), tag="settlement"
)
async def finalize_statement(request: web.Request) -> web.Response:
    """Finalize a merchant's statement for an ended month: it never changes after.

    409 `conflict` when it is already finalized, or when the month has not yet ended in the bank's time zone
    (its redemptions may still change). A void of one of its redemptions from then on is owed back as a
    negative line in the merchant's next open month. Audited as `statement.finalize`."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    month = _month(request)
    now, tz = request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone
    async with request.config_dict[POOL].acquire() as conn:
        statement = await service.finalize(conn, principal_of(request), merchant_id, month, now, tz)
    return json_response(statement)


@routes.get("/api/v1/settlements")
@endpoint(roles=BANK_STAFF_READERS, query=MonthQuery, response=SettlementView, alternatives=("text/csv",), tag="settlement")
async def month_settlement(request: web.Request, query: MonthQuery) -> web.StreamResponse:
    """The month's settlement: every merchant's statement totals, open or finalized, and their sum.

    Each item's figures are those of the merchant's statement for the month. With `?format=csv`: the items as a
    `text/csv` download (UTF-8 with a byte-order mark, CRLF line ends, a `Content-Disposition` file name)."""
    month = Month.parse(query.month)
    async with request.config_dict[POOL].acquire() as conn:
        result = await service.month_settlement(conn, month)
    if query.format == "csv":
        return csv_response(f"settlements-{month}.csv", SETTLEMENT_COLUMNS,
                            dict_rows(result["items"], SETTLEMENT_COLUMNS))
    return json_response(result)
