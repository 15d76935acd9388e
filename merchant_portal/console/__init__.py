"""The bank staff console (/console): partners, programme, clients, settlement, redemptions, audit, imports."""

from __future__ import annotations

from aiohttp import web

from perks.core.auth import STAFF_ROLES


def console_app(build) -> tuple[str, web.Application]:  # type: ignore[no-untyped-def]
    """The console's prefix and sub-application, built by the portal's ``build(site, tables, middlewares)``."""
    from merchant_portal.console import (
        audit_views,
        auth_views,
        client_views,
        dashboard_views,
        partner_views,
        programme_views,
        settlement_views,
    )
    from merchant_portal.console.common import login_redirect
    from merchant_portal.pages import Site

    site = Site("console", "/console", "perks_console", STAFF_ROLES)
    tables = [
        auth_views.routes, dashboard_views.routes, partner_views.routes, programme_views.routes,
        client_views.routes, settlement_views.routes, audit_views.routes,
    ]
    return site.prefix, build(site, tables, [login_redirect])
