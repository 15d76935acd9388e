"""Console pages: log in (bank staff only, throttled as the API's logins are), who am I, log out."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import security
from merchant_portal.console.common import reader, show
from merchant_portal.login import LoginRefused, log_in
from merchant_portal.pages import checked_form, explain, redirect, site_of
from perks.core.auth import STAFF_ROLES
from perks.core.endpoint import endpoint

routes = web.RouteTableDef()


@routes.get("")
@routes.get("/")
@endpoint(produces="text/html", tag="console")
async def console_home(request: web.Request) -> web.Response:
    """The console's entry: the dashboard (the login page without a session)."""
    reader(request)
    return redirect(site_of(request).url("/dashboard"))


@routes.get("/login")
@endpoint(produces="text/html", tag="console")
async def login_page(request: web.Request) -> web.Response:
    """The login form for bank staff."""
    return show(request, "console/login.html", {"username": ""})


@routes.post("/login")
@endpoint(produces="text/html", tag="console")
async def login_submit(request: web.Request) -> web.Response:
    """Log in: sets the console's session cookie; five failures in 15 minutes lock the username (as the API)."""
    try:
        return await log_in(request, STAFF_ROLES, "not_staff_user", "/dashboard")
    except LoginRefused as refused:
        context = {"username": refused.username, "error": explain(request, refused.code)}
        return show(request, "console/login.html", context, status=refused.status)


@routes.get("/me")
@endpoint(produces="text/html", tag="console")
async def who_am_i(request: web.Request) -> web.Response:
    """Who is logged in, with which role and what that role may do."""
    reader(request)
    return show(request, "console/me.html", {"tab": "me"})


@routes.post("/logout")
@endpoint(produces="text/html", tag="console")
async def logout(request: web.Request) -> web.Response:
    """Log out: forget the console's session cookie."""
    reader(request)
    await checked_form(request)
    site = site_of(request)
    response = redirect(site.url("/login"))
    security.clear_cookie(response, site.cookie, site.prefix)
    return response
