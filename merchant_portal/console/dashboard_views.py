"""Console page: the dashboard of this quota year (redemptions by month, perk and merchant; capacity; quota
use by tier; open anomalies; ratings), drawn as SVG on the server from the bank's reports."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from merchant_portal import charts
from merchant_portal.console.common import connection, reader, this_year, tz_of, show
from perks.catalogue import service as catalogue
from perks.core.endpoint import endpoint
from perks.reports import anomalies
from perks.reports import service as reports

routes = web.RouteTableDef()


@routes.get("/dashboard")
@endpoint(produces="text/html", tag="console")
async def dashboard(request: web.Request) -> web.Response:
    """This year's redemptions, capacity, quota use, anomalies and ratings."""
    reader(request)
    year = this_year(request)
    async with connection(request) as conn:
        usage = await reports.usage_report(conn, year)
        capacity = await reports.capacity_report(conn, year)
        quota_use = await reports.quota_use_report(conn, year)
        found = await anomalies.anomalies(conn, year, tz_of(request), limit=20)
        names = {perk["code"]: perk["name"] for perk in await catalogue.list_perks(conn, None, 1000)}
    by_month: Counter[int] = Counter()
    by_perk: Counter[str] = Counter()
    by_merchant: Counter[tuple[str, str]] = Counter()
    for item in usage["items"]:
        by_month[int(item["month"][5:])] += item["redeemed"]
        by_perk[item["perk"]] += item["redeemed"]
        by_merchant[(item["merchant_id"], item["merchant_name"])] += item["redeemed"]
    perk_chart = charts.labelled_bars((perk, names.get(perk, perk), n, None) for perk, n in by_perk.most_common(12))
    merchant_chart = charts.labelled_bars((mid, name, n, None) for (mid, name), n in by_merchant.most_common(12))
    capacity_chart = charts.labelled_bars(
        (item["merchant_id"] + ":" + item["perk"], f"{item['merchant_name']} · {names.get(item['perk'], item['perk'])}", item["used"],
         item["yearly_capacity"]) for item in capacity["items"][:30]
    )
    quota_chart = charts.labelled_bars(
        (item["tier"] + ":" + item["perk"], f"{item['tier_name']} · {item['perk_name']}", item["used"],
         item["promised"]) for item in quota_use["items"][:30]
    )
    ratings: dict[str, dict[str, Any]] = {}
    for item in capacity["items"]:
        ratings.setdefault(item["merchant_id"], {"name": item["merchant_name"], "average": item["rating_average"],
                                                 "count": item["rating_count"]})
    context = {
        "tab": "dashboard",
        "year": year,
        "total": sum(by_month.values()),
        "columns": charts.wide_month_columns(by_month),
        "width": charts.CONSOLE_WIDTH,
        "column_height": charts.COLUMN_CHART_HEIGHT,
        "bar_height": charts.BAR_HEIGHT,
        "charts": {"perk": perk_chart, "merchant": merchant_chart, "capacity": capacity_chart, "quota": quota_chart},
        "quota_items": quota_use["items"],
        "anomalies": found,
        "ratings": sorted(ratings.values(), key=lambda r: (r["average"] is None, -(r["average"] or 0))),
    }
    return show(request, "console/dashboard.html", context)
