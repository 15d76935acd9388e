"""Console pages: log in (bank staff only, throttled as the API's logins are), who am I, log out."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import security
from merchant_portal.console.common import connection, now_of, reader, show
from merchant_portal.pages import checked_form, explain, form_text, redirect, site_of
from perks.accounts import service as accounts
from perks.core.appkeys import CONFIG
from perks.core.auth import STAFF_ROLES
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError

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
    form = await checked_form(request)
    username = form_text(form, "username", 64)
    password = form.get("password", "")
    if not username or not isinstance(password, str) or not password or len(password) > 256:
        return _refused(request, username, "missing_credentials", 400)
    try:
        async with connection(request) as conn:
            principal = await accounts.login(conn, username, password, now_of(request))
    except ApiError as error:
        return _refused(request, username, error.code, error.status)
    if principal.role not in STAFF_ROLES:
        return _refused(request, username, "not_staff_user", 403)
    ttl = request.config_dict[CONFIG].session_ttl_seconds
    token = security.issue_session(request, principal, ttl)
    site = site_of(request)
    response = redirect(site.url("/dashboard"))
    security.set_cookie(request, response, site.cookie, token, site.prefix, ttl)
    return response


def _refused(request: web.Request, username: str, code: str, status: int) -> web.Response:
    return show(request, "console/login.html", {"username": username, "error": explain(request, code)}, status=status)


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
