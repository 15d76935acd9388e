"""The bank's today as a request sees it: the service clock's instant, dated in the bank's time zone."""

from __future__ import annotations

from datetime import date

from aiohttp import web

from perks.core.appkeys import CLOCK, CONFIG


def bank_today(request: web.Request) -> date:
    """Today's date in the bank's time zone, by the service's clock."""
    return request.config_dict[CLOCK].now().astimezone(request.config_dict[CONFIG].timezone).date()
