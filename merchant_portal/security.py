"""Cookie sessions, CSRF tokens and the security headers of every portal and wallet response."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Awaitable, Callable

from aiohttp import web

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import Principal, derive_key, session_is_current
from perks.core.endpoint import issue_session_token, verify_session_token
from perks.core.errors import ApiError
from perks.core.validation import text_problem

# No inline script or style anywhere; the camera's stream is shown through a blob:/mediastream: source.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "manifest-src 'self'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=()",
}
PRE_SESSION_COOKIE = "perks_pre"
PRE_SESSION_SECONDS = 3600
# Set by the session guard when the site's cookie holds a token whose account has since been disabled, blocked,
# logged out or given a new password: the page then treats it as no session at all.
SESSION_REVOKED = web.RequestKey("session_revoked", bool)
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


class CsrfRefused(ApiError):
    """A form or call without the right CSRF token (a stale page, or another site's forgery)."""

    status, code = 403, "forbidden"

    def __init__(self) -> None:
        super().__init__(details={"reason": "csrf"})


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Set the security headers; pages and JSON, which may hold data, are never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if is_https(request):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if "/static/" not in request.path:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, path: str, max_age: int) -> None:
    """An HttpOnly, SameSite=Lax cookie, Secure when configured or served over HTTPS."""
    secure = request.config_dict[CONFIG].secure_cookies or is_https(request)
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="Lax", secure=secure)


def clear_cookie(response: web.StreamResponse, name: str, path: str) -> None:
    """Remove a cookie set by :func:`set_cookie`."""
    response.del_cookie(name, path=path)


def issue_session(request: web.Request, principal: Principal, ttl_seconds: int) -> str:
    """A session token for ``principal``, the same kind the API's bearer tokens are."""
    now = request.config_dict[CLOCK].now()
    return issue_session_token(request, principal, now, ttl_seconds)


def session_principal(request: web.Request, cookie: str, roles: frozenset[str]) -> Principal | None:
    """The principal of the session cookie ``cookie`` if it is valid, not revoked and of one of ``roles``."""
    if request.get(SESSION_REVOKED):
        return None
    return _cookie_principal(request, cookie, roles)


def _cookie_principal(request: web.Request, cookie: str, roles: frozenset[str]) -> Principal | None:
    token = request.cookies.get(cookie)
    if not token or text_problem(token):  # a cookie of undecodable bytes is no session (never a 500)
        return None
    try:
        principal = verify_session_token(request, token)
    except ApiError:
        return None
    return principal if principal.role in roles else None


def csrf_token(request: web.Request, seed: str) -> str:
    """The CSRF token bound to ``seed`` (a session token or a pre-session cookie): an HMAC, no server state."""
    key = derive_key(request.config_dict[CONFIG].secret, "portal-csrf")
    digest = hmac.new(key, seed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def check_csrf(request: web.Request, seed: str | None, presented: str | None) -> None:
    """Refuse unless ``presented`` is the CSRF token of ``seed``."""
    if not seed or not presented or not hmac.compare_digest(csrf_token(request, seed), presented):
        raise CsrfRefused()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_guard(cookie: str, roles: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A site's middleware: one primary-key read per page checks that its session cookie has not been revoked."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = _cookie_principal(request, cookie, roles)
        if principal is not None and "/static/" not in request.path:
            if not await session_is_current(request.config_dict[POOL], principal):
                request[SESSION_REVOKED] = True
        return await handler(request)

    return guard


def _pre_session_signature(request: web.Request, body: str) -> str:
    key = derive_key(request.config_dict[CONFIG].secret, "portal-pre-session")
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]).decode()


def pre_session_value(request: web.Request) -> str | None:
    """The browser's pre-session cookie if this service issued it within the hour; ``None`` for anything else.

    The value is ``nonce.issued_at.signature``: a value an attacker plants (unsigned, altered or stale) is never
    used as a CSRF seed, so no page ever shows a CSRF token for it and no form posted with it is accepted."""
    value = request.cookies.get(PRE_SESSION_COOKIE) or ""
    nonce, _, rest = value.partition(".")
    issued, _, signature = rest.partition(".")
    if len(value) > 96 or not nonce or not issued.isdigit() or not signature:
        return None
    if not hmac.compare_digest(_pre_session_signature(request, f"{nonce}.{issued}"), signature):
        return None
    age = request.config_dict[CLOCK].now().timestamp() - int(issued)
    return value if -60 <= age <= PRE_SESSION_SECONDS else None


def pre_session_seed(request: web.Request) -> str:
    """The signed random value that binds a form shown before any session (login, wallet link) to this browser."""
    seed = pre_session_value(request)
    if seed is None:
        body = f"{secrets.token_urlsafe(18)}.{int(request.config_dict[CLOCK].now().timestamp())}"
        seed = f"{body}.{_pre_session_signature(request, body)}"
    return seed


def keep_pre_session(request: web.Request, response: web.StreamResponse, seed: str) -> None:
    """Send the pre-session value back as a cookie (refreshed with each form shown)."""
    set_cookie(request, response, PRE_SESSION_COOKIE, seed, "/", PRE_SESSION_SECONDS)


def end_pre_session(response: web.StreamResponse) -> None:
    """Forget the pre-session value once it has served (a login, an opened link): each is used for one form."""
    clear_cookie(response, PRE_SESSION_COOKIE, "/")
