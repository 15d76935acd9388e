"""create_app: wires configuration, database, security, routes and the portal into one application."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import setup_portal
from perks.accounts.routes import routes as account_routes
from perks.audit.routes import routes as audit_routes
from perks.catalogue.routes import routes as catalogue_routes
from perks.clients.routes import routes as client_routes
from perks.core import apidocs, health
from perks.core.appkeys import CLOCK, CONFIG, METRICS
from perks.core.auth import SessionTokens
from perks.core.clock import Clock
from perks.core.config import Config
from perks.core.db import pool_ctx
from perks.core.endpoint import SESSION_TOKENS
from perks.core.metrics import Metrics
from perks.core.middleware import errors, metrics, request_context
from perks.events.routes import routes as event_routes
from perks.feedback.routes import routes as feedback_routes
from perks.grants.routes import routes as grant_routes
from perks.housekeeping import housekeeping_ctx
from perks.merchants.routes import routes as merchant_routes
from perks.points.routes import routes as points_routes
from perks.redemption.routes import routes as redemption_routes
from perks.reports.routes import routes as report_routes
from perks.settlement.routes import routes as settlement_routes
from perks.vouchers.routes import routes as voucher_routes
from perks.vouchers.setup import vouchers_ctx
from perks.webhooks.dispatcher import webhooks_ctx
from perks.webhooks.routes import routes as webhook_routes


def create_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    """The perks web application for ``config``; ``clock`` lets tests stand at any instant."""
    app = web.Application(
        middlewares=[request_context, metrics, errors],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[CLOCK] = clock or Clock()
    app[METRICS] = Metrics()
    app[SESSION_TOKENS] = SessionTokens(config.secret)
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(vouchers_ctx)
    app.cleanup_ctx.append(housekeeping_ctx)
    app.cleanup_ctx.append(webhooks_ctx)
    for table in (
        health.routes,
        account_routes,
        catalogue_routes,
        merchant_routes,
        client_routes,
        audit_routes,
        voucher_routes,
        redemption_routes,
        points_routes,
        settlement_routes,
        feedback_routes,
        report_routes,
        event_routes,
        webhook_routes,
        grant_routes,
    ):
        app.add_routes(table)
    setup_portal(app)
    apidocs.setup(app)
    return app
