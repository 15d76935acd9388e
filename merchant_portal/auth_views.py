"""Portal pages: log in and out (merchant users only, throttled exactly as the API's logins are)."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import security
from merchant_portal.pages import (
    LoginRequired,
    checked_form,
    current_principal,
    explain,
    form_text,
    redirect,
    render,
    site_of,
)
from perks.accounts import service as accounts
from perks.accounts import sessions
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import MERCHANT_ROLES
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError

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
    form = await checked_form(request)
    username = form_text(form, "username", 64)
    password = form.get("password", "")
    if not username or not isinstance(password, str) or not password or len(password) > 256:
        return _login_refused(request, username, "missing_credentials", 400)
    now = request.config_dict[CLOCK].now()
    try:
        async with request.config_dict[POOL].acquire() as conn:
            principal = await accounts.login(conn, username, password, now)
    except ApiError as error:
        return _login_refused(request, username, error.code, error.status)
    if principal.role not in MERCHANT_ROLES:
        return _login_refused(request, username, "not_merchant_user", 403)
    ttl = request.config_dict[CONFIG].session_ttl_seconds
    token = security.issue_session(request, principal, ttl)
    response = redirect(site_of(request).url("/scan"))
    security.set_cookie(request, response, site_of(request).cookie, token, site_of(request).prefix, ttl)
    security.end_pre_session(response)
    return response


def _login_refused(request: web.Request, username: str, code: str, status: int) -> web.Response:
    message = explain(request, code)
    return render(request, "login.html", {"username": username, "error": message}, status=status)


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
