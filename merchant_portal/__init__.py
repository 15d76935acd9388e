"""The merchant portal (/portal) and the client's wallet (/wallet): server-rendered pages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from perks.core.auth import CLIENTS, MERCHANT_ROLES

if TYPE_CHECKING:
    from merchant_portal.pages import Site

PACKAGE_DIR = Path(__file__).parent


def _site_app(site: Site, tables: list[web.RouteTableDef], inner: list | None = None) -> web.Application:
    from merchant_portal import pages, security

    sub = web.Application(
        middlewares=[pages.html_errors, security.session_guard(site.cookie, site.roles), *(inner or [])]
    )
    sub[pages.SITE] = site
    aiohttp_jinja2.setup(
        sub,
        loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for table in tables:
        sub.add_routes(table)
    sub.router.add_static("/static", pages.STATIC_DIR)
    sub.on_response_prepare.append(security.add_security_headers)
    return sub


def setup_portal(app: web.Application) -> None:
    """Mount the portal on /portal, the wallet on /wallet, the staff console on /console, and the API route
    that mints wallet links."""
    from merchant_portal import auth_views, overview_views, scan_views, today_views, wallet_views
    from merchant_portal.pages import Site

    portal = Site("portal", "/portal", "perks_portal", MERCHANT_ROLES)
    wallet = Site("wallet", "/wallet", "perks_wallet", CLIENTS)
    portal_tables = [auth_views.routes, scan_views.routes, today_views.routes, overview_views.routes]
    app.add_subapp(portal.prefix, _site_app(portal, portal_tables))
    app.add_subapp(wallet.prefix, _site_app(wallet, [wallet_views.routes]))
    from merchant_portal.console import console_app

    app.add_subapp(*console_app(_site_app))
