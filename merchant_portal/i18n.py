"""Translation catalogues (zh-CN by default, English on request) and the request's language."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

from aiohttp import web

CATALOGUE_DIR = Path(__file__).parent / "translations"
LANGUAGES = {"zh-CN": "zh_CN", "en": "en"}
DEFAULT_LANGUAGE = "zh-CN"
LANG_COOKIE = "perks_lang"
LANG_COOKIE_MAX_AGE = 365 * 86400

Translate = Callable[..., str]


@lru_cache(maxsize=None)
def catalogue(language: str) -> dict[str, str]:
    """Every string of ``language`` (a key of ``LANGUAGES``), read once."""
    path = CATALOGUE_DIR / f"{LANGUAGES[language]}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _normalise(value: str | None) -> str | None:
    if not value:
        return None
    lowered = value.strip().lower().replace("_", "-")
    if lowered in ("zh", "zh-cn", "zh-hans"):
        return "zh-CN"
    if lowered in ("en", "en-us", "en-gb"):
        return "en"
    return None


def requested_language(request: web.Request) -> str | None:
    """The language asked for in ``?lang=``, if it is one we speak."""
    return _normalise(request.query.get("lang"))


def language_of(request: web.Request) -> str:
    """The page's language: ``?lang=``, else the language cookie, else Chinese."""
    return requested_language(request) or _normalise(request.cookies.get(LANG_COOKIE)) or DEFAULT_LANGUAGE


def translator(language: str) -> Translate:
    """``t(key, **values)`` for ``language``; a missing key shows itself (a test keeps catalogues complete)."""
    strings = catalogue(language)

    def t(key: str, **values: object) -> str:
        text = strings.get(key, key)
        return text.format(**values) if values else text

    return t


def error_text(language: str, code: str, audience: str = "portal") -> str:
    """The explanation of an error or refusal code in ``language``; the wallet speaks to the client himself."""
    strings = catalogue(language)
    if audience == "wallet" and f"wallet_error.{code}" in strings:
        return strings[f"wallet_error.{code}"]
    return strings.get(f"error.{code}") or strings["error.unknown"]


def remember_language(request: web.Request, response: web.StreamResponse) -> None:
    """Keep a language chosen with ``?lang=`` in a cookie for the following pages."""
    chosen = requested_language(request)
    if chosen and chosen != request.cookies.get(LANG_COOKIE):
        response.set_cookie(LANG_COOKIE, chosen, max_age=LANG_COOKIE_MAX_AGE, path="/", samesite="Lax", httponly=True)
