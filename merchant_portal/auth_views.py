"""Portal pages: log in and out (merchant users only, throttled exactly as the API's logins are)."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import security
from merchant_portal.login import LoginRefused, log_in
from merchant_portal.pages import LoginRequired, checked_form, current_principal, explain, redirect, render, site_of
from perks.accounts import sessions
from perks.core.appkeys import CLOCK, POOL
from perks.core.auth import MERCHANT_ROLES
from perks.core.endpoint import endpoint

routes = web.RouteTableDef()


@routes.get("")
@routes.get("/")
@endpoint(produces="text/html", tag="portal")
async def portal_home(request: web.Request) -> web.Response:
    """The portal's entry: the scan page when logged in, else the login page."""
    try:
        current_principal(request)
    except LoginRequired:
        return redirect(site_of(request).url("/login"))
    return redirect(site_of(request).url("/scan"))


@routes.get("/login")
@endpoint(produces="text/html", tag="portal")
async def login_page(request: web.Request) -> web.Response:
    """The login form for a merchant's managers and cashiers."""
    return render(request, "login.html", {"username": ""})


@routes.post("/login")
@endpoint(produces="text/html", tag="portal")
async def login_submit(request: web.Request) -> web.Response:
    """Log in: sets the portal's session cookie; five failures in 15 minutes lock the username."""
    try:
        response = await log_in(request, MERCHANT_ROLES, "not_merchant_user", "/scan")
    except LoginRefused as refused:
        context = {"username": refused.username, "error": explain(request, refused.code)}
        return render(request, "login.html", context, status=refused.status)
    security.end_pre_session(response)
    return response


@routes.post("/logout")
@endpoint(produces="text/html", tag="portal")
async def logout(request: web.Request) -> web.Response:
    """Log out: end the user's sessions on the server (on every device: the session generation is bumped), then
    forget the cookie, so that a copied cookie stops working too."""
    principal = current_principal(request)
    await checked_form(request)
    async with request.config_dict[POOL].acquire() as conn:
        await sessions.log_out(conn, principal, request.config_dict[CLOCK].now())
    response = redirect(site_of(request).url("/login"))
    security.clear_cookie(response, site_of(request).cookie, site_of(request).prefix)
    return response
