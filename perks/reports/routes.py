"""HTTP: the bank's reports of a quota year (JSON or CSV) and the warning signs worth a look."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Literal, Sequence

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_READERS
from perks.core.csvfiles import FormatQuery, csv_response, dict_rows
from perks.core.endpoint import endpoint
from perks.core.jsonutil import json_response
from perks.core.validation import Query
from perks.quotas import quota_period
from perks.reports import anomalies
from perks.reports import service as reports
from perks.settlement.periods import FIRST_YEAR, LAST_YEAR

routes = web.RouteTableDef()

Year = Field(None, ge=FIRST_YEAR, le=LAST_YEAR, description="The quota year; default: the current one.")


class YearQuery(FormatQuery):
    year: int | None = Year


class UsageItem(BaseModel):
    merchant_id: str
    merchant_name: str
    perk: str
    month: str = Field(description="The quota month, `YYYY-MM`.")
    redeemed: int = Field(description="Redemptions standing (not voided).")
    voided: int
    amount_fen: int = Field(description="The recorded prices of the standing redemptions.")


class UsageReport(BaseModel):
    year: int
    items: list[UsageItem]


class CapacityItem(BaseModel):
    merchant_id: str
    merchant_name: str
    perk: str
    yearly_capacity: int | None = Field(description="As agreed now; null: no cap.")
    used: int
    remaining: int | None
    used_pct: float | None = Field(description="`used` as a percentage of the capacity, one decimal.")
    unit_price_fen: int = Field(description="As agreed now.")
    rating_average: float | None = Field(description="The merchant's mean rating (all its ratings).")
    rating_count: int


class CapacityReport(BaseModel):
    year: int
    items: list[CapacityItem]


class QuotaUseItem(BaseModel):
    tier: str
    tier_name: str
    perk: str
    perk_name: str
    yearly_quota: int | None
    clients: int = Field(description="Clients in the tier now.")
    promised: int | None = Field(description="`yearly_quota` × `clients`; null for an unlimited quota.")
    used: int = Field(description="Those clients' uses of the perk in the year.")
    used_pct: float | None = Field(description="`used` as a percentage of `promised`, one decimal.")
    clients_using: int = Field(description="Clients who used the perk at least once.")
    clients_exhausted: int = Field(description="Clients who used their whole quota.")


class QuotaUseReport(BaseModel):
    year: int
    items: list[QuotaUseItem]


class QuotaUseByTagItem(BaseModel):
    tag: str
    perk: str
    perk_name: str
    clients: int = Field(description="Clients carrying the tag now.")
    used: int = Field(description="Those clients' uses of the perk in the year.")
    clients_using: int = Field(description="Of them, clients who used the perk at least once.")


class QuotaUseByTagReport(BaseModel):
    year: int
    items: list[QuotaUseByTagItem]


Kind = Literal["client_concentration", "repeated_same_day", "capacity_early"]


class AnomalyQuery(Query):
    year: int | None = Year
    kind: Kind | None = Field(None, description="One kind only.")
    limit: int = Field(100, ge=1, le=1000, description="At most this many of each kind, worst first.")


class Anomaly(BaseModel):
    kind: Kind
    merchant_id: str
    merchant_name: str
    perk: str | None
    evidence: dict[str, Any] = Field(
        description="client_concentration: `redemptions`, `top_clients` [{client_id, display_name, "
        "redemptions}], `top_redemptions`, `top_share_pct`. repeated_same_day: `client_id`, `display_name`, "
        "`date`, `redemptions`, `redemption_ids`, `perks`. capacity_early: `yearly_capacity`, `used`, "
        "`threshold`, `reached_at`, `year_elapsed_pct`."
    )


class AnomalyReport(BaseModel):
    year: int
    thresholds: dict[str, int]
    found: dict[str, int] = Field(description="How many cases of each kind were found, listed or not.")
    items: list[Anomaly]


def _year(request: web.Request, year: int | None) -> int:
    if year is not None:
        return year
    return quota_period(request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone)[0]


async def _report(
    request: web.Request,
    query: YearQuery,
    build: Callable[[asyncpg.Connection, int], Awaitable[dict[str, Any]]],
    name: str,
    columns: Sequence[str],
    csv_row: Callable[[dict[str, Any]], list[Any]] | None = None,
) -> web.Response:
    year = _year(request, query.year)
    async with request.config_dict[POOL].acquire() as conn:
        result = await build(conn, year)
    if query.format == "csv":
        rows = [csv_row(item) for item in result["items"]] if csv_row else dict_rows(result["items"], columns)
        return csv_response(f"{name}-{year}.csv", columns, rows)
    return json_response(result)


@routes.get("/api/v1/reports/usage")
@endpoint(
    roles=BANK_STAFF_READERS, query=YearQuery, response=UsageReport, alternatives=("text/csv",), tag="reports"
)
async def usage_report(request: web.Request, query: YearQuery) -> web.Response:
    """Redemptions per merchant, perk and quota month of a year.

    `?format=csv`: the items as a `text/csv` download (UTF-8 with a byte-order mark), the month split into `year`
    and `month` numbers so that spreadsheets keep it as it is."""
    return await _report(
        request, query, reports.usage_report, "usage", reports.USAGE_CSV_COLUMNS, reports.usage_csv_row
    )


@routes.get("/api/v1/reports/capacity")
@endpoint(
    roles=BANK_STAFF_READERS, query=YearQuery, response=CapacityReport, alternatives=("text/csv",), tag="reports"
)
async def capacity_report(request: web.Request, query: YearQuery) -> web.Response:
    """Each merchant's use of its yearly capacity for each perk it honours, with its rating.

    `?format=csv`: the items as a `text/csv` download (UTF-8 with a byte-order mark)."""
    return await _report(request, query, reports.capacity_report, "capacity", reports.CAPACITY_COLUMNS)


@routes.get("/api/v1/reports/quota-use")
@endpoint(
    roles=BANK_STAFF_READERS, query=YearQuery, response=QuotaUseReport, alternatives=("text/csv",), tag="reports"
)
async def quota_use_report(request: web.Request, query: YearQuery) -> web.Response:
    """Clients' use of their quotas by tier and perk: how much of what was promised is used.

    Clients count in their tier of now, with all their uses of the year. `?format=csv`: the items as a
    `text/csv` download (UTF-8 with a byte-order mark)."""
    return await _report(request, query, reports.quota_use_report, "quota-use", reports.QUOTA_USE_COLUMNS)


@routes.get("/api/v1/reports/quota-use/by-tag")
@endpoint(
    roles=BANK_STAFF_READERS, query=YearQuery, response=QuotaUseByTagReport, alternatives=("text/csv",), tag="reports"
)
async def quota_use_by_tag_report(request: web.Request, query: YearQuery) -> web.Response:
    """Clients' use of perks by client tag (segment) and perk.

    Clients count under each tag they carry now, with all their uses of the year; a perk an entitlement reserves
    for a tag is listed for it even unused. `?format=csv`: the items as a `text/csv` download."""
    return await _report(request, query, reports.quota_use_by_tag_report, "quota-use-by-tag",
                         reports.QUOTA_USE_BY_TAG_COLUMNS)


@routes.get("/api/v1/reports/anomalies")
@endpoint(roles=BANK_STAFF_READERS, query=AnomalyQuery, response=AnomalyReport, tag="reports")
async def anomaly_report(request: web.Request, query: AnomalyQuery) -> web.Response:
    """Warning signs in a year's standing redemptions, each with its evidence.

    `client_concentration`: a merchant with at least 20 redemptions of which its top 3 clients hold more than
    half. `repeated_same_day`: a client redeeming at least twice at one merchant on one day (bank's time zone).
    `capacity_early`: 90% of a perk's yearly capacity used before 60% of the year had passed. Worst first."""
    year = _year(request, query.year)
    tz = request.config_dict[CONFIG].timezone
    async with request.config_dict[POOL].acquire() as conn:
        result = await anomalies.anomalies(conn, year, tz, kind=query.kind, limit=query.limit)
    return json_response(result)

