"""Cookie sessions, CSRF tokens and the security headers of every portal and wallet response."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from aiohttp import web

from perks.core.appkeys import CLOCK, CONFIG
from perks.core.auth import Principal, derive_key
from perks.core.endpoint import SESSION_TOKENS
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
    return request.config_dict[SESSION_TOKENS].issue(principal, now, ttl_seconds)


def session_principal(request: web.Request, cookie: str, roles: frozenset[str]) -> Principal | None:
    """The principal of the session cookie ``cookie`` if it is valid and of one of ``roles``."""
    token = request.cookies.get(cookie)
    if not token or text_problem(token):  # a cookie of undecodable bytes is no session (never a 500)
        return None
    try:
        principal = request.config_dict[SESSION_TOKENS].verify(token, request.config_dict[CLOCK].now())
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


def pre_session_seed(request: web.Request) -> str:
    """The random value that binds a form shown before any session (login, wallet link) to this browser."""
    seed = request.cookies.get(PRE_SESSION_COOKIE)
    if not seed or len(seed) > 64:
        seed = secrets.token_urlsafe(24)
    return seed


def keep_pre_session(request: web.Request, response: web.StreamResponse, seed: str) -> None:
    """Send the pre-session value back as a cookie (refreshed with each form shown)."""
    set_cookie(request, response, PRE_SESSION_COOKIE, seed, "/", 3600)
