"""What logging in to a site of the portal shares: the form read, the throttled check of the API's logins, the
roles the site admits, and the session cookie set on the way to its first page."""

from __future__ import annotations

from aiohttp import web

from merchant_portal import security
from merchant_portal.pages import checked_form, form_text, redirect, site_of
from perks.accounts import service as accounts
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.errors import ApiError

MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 256


class LoginRefused(Exception):
    """Why a login was refused: the contract's code and status, and the username to show in the form again."""

    def __init__(self, username: str, code: str, status: int) -> None:
        super().__init__(code)
        self.username, self.code, self.status = username, code, status


async def log_in(request: web.Request, roles: frozenset[str], not_admitted: str, landing: str) -> web.Response:
    """Log the posted form's user in: a redirect to ``landing`` carrying the site's session cookie.

    Five failures in 15 minutes lock the username, as the API's logins do; a user of a role outside ``roles`` is
    refused as ``not_admitted`` (403). Raises :class:`LoginRefused` for any refusal."""
    form = await checked_form(request)
    username = form_text(form, "username", MAX_USERNAME_CHARS)
    password = form.get("password", "")
    if not username or not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_CHARS:
        raise LoginRefused(username, "missing_credentials", 400)
    now = request.config_dict[CLOCK].now()
    try:
        async with request.config_dict[POOL].acquire() as conn:
            principal = await accounts.login(conn, username, password, now)
    except ApiError as error:
        raise LoginRefused(username, error.code, error.status) from None
    if principal.role not in roles:
        raise LoginRefused(username, not_admitted, 403)
    ttl = request.config_dict[CONFIG].session_ttl_seconds
    token = security.issue_session(request, principal, ttl)
    site = site_of(request)
    response = redirect(site.url(landing))
    security.set_cookie(request, response, site.cookie, token, site.prefix, ttl)
    return response
