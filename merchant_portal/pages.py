"""What every portal and wallet page shares: the site it belongs to, rendering, sessions, HTML errors."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from merchant_portal import security
from merchant_portal.i18n import error_text, language_of, remember_language, translator
from perks.core.auth import Principal
from perks.core.db import is_database_unavailable
from perks.core.errors import ApiError
from perks.core.middleware import code_for_status

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Site:
    """One of the two sub-applications: where it is mounted, its cookie and who may hold it."""

    name: str
    prefix: str
    cookie: str
    roles: frozenset[str]

    def url(self, path: str = "/") -> str:
        """The absolute path of ``path`` on this site."""
        return self.prefix + path


SITE = web.AppKey("site", Site)
PRINCIPAL = web.RequestKey("page_principal", Principal)


class LoginRequired(Exception):
    """No valid session cookie for this site."""


def site_of(request: web.Request) -> Site:
    """The site (portal or wallet) serving this request."""
    return request.app[SITE]


def current_principal(request: web.Request) -> Principal:
    """The principal of the site's session cookie; ``LoginRequired`` without one."""
    site = site_of(request)
    principal = security.session_principal(request, site.cookie, site.roles)
    if principal is None:
        raise LoginRequired()
    request[PRINCIPAL] = principal
    return principal


async def checked_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form, once its CSRF token matches the session (or, before one, the pre-session cookie)."""
    form = await request.post()
    site = site_of(request)
    seed = request.cookies.get(site.cookie) if PRINCIPAL in request else security.pre_session_value(request)
    presented = form.get(security.CSRF_FIELD)
    security.check_csrf(request, seed, presented if isinstance(presented, str) else None)
    return form


def form_text(form: MultiDictProxy[Any], name: str, max_length: int = 500) -> str:
    """A text field of a form, trimmed; a file or an over-long value counts as empty."""
    value = form.get(name, "")
    if not isinstance(value, str) or len(value) > max_length:
        return ""
    return value.strip()


@lru_cache(maxsize=None)
def _static_version(path: str) -> str:
    return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:10]


def static_url(site: Site, path: str) -> str:
    """The URL of a static file, versioned by its content so that browsers may cache it."""
    return f"{site.prefix}/static/{path}?v={_static_version(path)}"


def language_urls(request: web.Request) -> dict[str, str]:
    """This page's URL in each language (only for pages reached with GET)."""
    url = request.rel_url if request.method == "GET" else URL(site_of(request).url("/"))
    return {lang: str(url.update_query(lang=lang)) for lang in ("zh-CN", "en")}


def render(request: web.Request, template: str, context: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    """A page in the request's language, with the CSRF token of its session (or of a new pre-session)."""
    site = site_of(request)
    language = language_of(request)
    principal = request.get(PRINCIPAL)
    pre_seed = None
    if principal is not None:
        csrf = security.csrf_token(request, request.cookies[site.cookie])
    else:
        pre_seed = security.pre_session_seed(request)
        csrf = security.csrf_token(request, pre_seed)
    base = {
        "t": translator(language),
        "lang": language,
        "html_lang": "zh-CN" if language == "zh-CN" else "en",
        "site": site,
        "static": lambda path: static_url(site, path),
        "language_urls": language_urls(request),
        "principal": principal,
        "csrf": csrf,
        "tab": None,
        "error": None,
    }
    response = aiohttp_jinja2.render_template(template, request, base | (context or {}), status=status)
    remember_language(request, response)
    if pre_seed is not None:
        security.keep_pre_session(request, response, pre_seed)
    return response


def wants_json(request: web.Request) -> bool:
    """Whether the request is one of the pages' own JSON calls rather than a page."""
    return "/api/" in request.path


def explain(request: web.Request, code: str) -> str:
    """``code`` in words, in the request's language, addressed to the site's reader (merchant staff or client)."""
    return error_text(language_of(request), code, site_of(request).name)


def error_page(request: web.Request, code: str, status: int) -> web.Response:
    """A page explaining ``code`` in words."""
    return render(request, "error.html", {"code": code, "message": explain(request, code)}, status=status)


@web.middleware
async def html_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Errors as pages in the reader's language; the pages' JSON calls keep the contract's error shape."""
    try:
        return await handler(request)
    except LoginRequired:
        site = site_of(request)
        if site.name == "portal" and not wants_json(request):
            return redirect(site.url("/login"))
        if wants_json(request):
            raise ApiError("unauthorized", explain(request, "unauthorized"), status=401) from None
        return error_page(request, "session_expired", 401)
    except ApiError as error:
        code = "csrf" if isinstance(error, security.CsrfRefused) else error.code
        if wants_json(request):
            error.message = explain(request, code)
            raise
        return error_page(request, code, error.status)
    except web.HTTPException as exc:
        if exc.status < 400 or wants_json(request):
            raise
        return error_page(request, code_for_status(exc.status) or "bad_request", exc.status)
    except Exception as exc:
        if wants_json(request):
            raise
        if is_database_unavailable(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_page(request, "database_unavailable", 503)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_page(request, "internal_error", 500)


def redirect(location: str) -> web.Response:
    """A 303 to ``location`` (returned, not raised, so that cookies set on it are sent)."""
    return web.Response(status=303, headers={"Location": location})
