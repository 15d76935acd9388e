"""Portal page: the manager's overview of the year (capacity use per perk, redemptions per month), as SVG."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from merchant_portal import charts
from merchant_portal.pages import current_principal, render
from merchant_portal.today_views import perk_names
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.endpoint import endpoint
from perks.core.errors import Forbidden
from perks.feedback.service import merchant_rating
from perks.merchants import service as merchants
from perks.quotas import quota_period
from perks.redemption.queries import monthly_redemptions

routes = web.RouteTableDef()

@routes.get("/overview")
@endpoint(produces="text/html", tag="portal")
async def overview_page(request: web.Request) -> web.Response:
    """The manager's overview: this year's capacity use per perk and redemptions per month."""
    actor = current_principal(request)
    if actor.role != "manager":
        raise Forbidden()
    year, _ = quota_period(request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone)
    merchant_id = UUID(actor.merchant_id)
    async with request.config_dict[POOL].acquire() as conn:
        usage = await merchants.merchant_usage(conn, merchant_id, year)
        per_month = await monthly_redemptions(conn, merchant_id, year)
        names = await perk_names(conn)
        rating = await merchant_rating(conn, merchant_id)
    bars, bars_height = charts.capacity_bars(usage["items"], names)
    context = {
        "tab": "overview",
        "year": year,
        "bars": bars,
        "bars_height": bars_height,
        "columns": charts.month_columns(per_month),
        "chart_width": charts.WIDTH,
        "column_chart_height": charts.COLUMN_CHART_HEIGHT,
        "bar_height": charts.BAR_HEIGHT,
        "total": sum(per_month.values()),
        "rating": rating,
    }
    return render(request, "overview.html", context)
