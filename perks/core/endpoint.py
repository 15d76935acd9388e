"""One decorator per route declares who may call it, what it takes and returns; the OpenAPI
document is built from these declarations, and role checks happen here and nowhere else."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Collection

from aiohttp import web
from pydantic import BaseModel

from perks.core.appkeys import CLOCK, POOL, PRINCIPAL
from perks.core.auth import Principal, SessionTokens, session_is_current
from perks.core.errors import ApiError, Forbidden, Unauthorized
from perks.core.validation import (
    parse_body,
    parse_query,
    refuse_unsafe_form,
    refuse_unsafe_input,
    text_problem,
)

Handler = Callable[..., Awaitable[web.StreamResponse]]
# A request header a route reads: its description, or ``(description, JSON schema of its values)``.
Header = str | tuple[str, dict[str, Any]]

PUBLIC: frozenset[str] = frozenset()
SESSION_TOKENS = web.AppKey("session_tokens", SessionTokens)
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class EndpointSpec:
    """What a route declares about itself."""

    roles: frozenset[str]
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    errors: tuple[str, ...]
    summary: str
    description: str
    tag: str | None
    produces: str
    headers: dict[str, Header] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()
    consumes: str = "application/json"
    uses_database: bool = True


def endpoint(
    *,
    roles: Collection[str] = PUBLIC,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: Any = None,
    status: int = 200,
    errors: Collection[str] = (),
    tag: str | None = None,
    produces: str = "application/json",
    headers: dict[str, Header] | None = None,
    alternatives: Collection[str] = (),
    consumes: str = "application/json",
    session_check: bool = True,
    uses_database: bool = True,
) -> Callable[[Handler], Handler]:
    """Declare a route: the roles allowed (empty: public), its body and query models, its response.

    ``consumes`` names the media type of a body the handler reads itself (``text/csv``, say; no ``body`` model).
    ``headers`` are the request headers it reads; ``uses_database=False`` for the few that never touch it.
    ``session_check=False`` is for a route that checks the session's generation in its own first statement."""
    allowed = frozenset(roles)
    header_names = tuple(headers or ())

    def wrap(handler: Handler) -> Handler:
        doc = inspect.cleandoc(handler.__doc__ or "")
        summary, _, description = doc.partition("\n")
        spec = EndpointSpec(
            roles=allowed,
            body=body,
            query=query,
            response=response,
            status=status,
            errors=tuple(errors),
            summary=summary.strip(),
            description=description.strip(),
            tag=tag,
            produces=produces,
            headers=headers or {},
            alternatives=tuple(alternatives),
            consumes=consumes,
            uses_database=uses_database,
        )
        is_page = produces == "text/html"

        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            # The edge: text no handler could store (NUL, invalid UTF-8) is refused before anything reads it.
            refuse_unsafe_input(request, header_names)
            if is_page and request.method == "POST":
                await refuse_unsafe_form(request)
            if allowed:
                if text_problem(request.headers.get("Authorization", "")):
                    raise Unauthorized()  # a garbled token is no token
                principal = authenticate(request)
                if session_check and not await session_is_current(request.config_dict[POOL], principal):
                    raise Unauthorized()
                request[PRINCIPAL] = principal
            try:
                if allowed and request[PRINCIPAL].role not in allowed:
                    raise Forbidden()
                kwargs: dict[str, Any] = {}
                if query is not None:
                    kwargs["query"] = parse_query(request, query)
                if body is not None:
                    kwargs["body"] = await parse_body(request, body)
            except (ApiError, web.HTTPException):
                # A route that checks the session in its own first statement never reaches it with a refused
                # request: a stale session still hears 401 before any role or body problem.
                if allowed and not session_check and not await session_is_current(
                    request.config_dict[POOL], request[PRINCIPAL]
                ):
                    raise Unauthorized() from None
                raise
            response = await handler(request, **kwargs)
            if response.content_type == "application/json":
                # Answers hold sessions' data (a client's phone, birthday, a token): kept out of every cache,
                # unless the route says otherwise (the JWKS).
                response.headers.setdefault("Cache-Control", "no-store")
            return response

        run.__perks_endpoint__ = spec  # type: ignore[attr-defined]
        return run

    return wrap


def authenticate(request: web.Request) -> Principal:
    """The principal of the request's bearer session token; 401 without a valid one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return verify_session_token(request, token.strip())


def issue_session_token(request: web.Request, principal: Principal, now: datetime, ttl_seconds: int) -> str:
    """A session token for ``principal`` valid for ``ttl_seconds`` from ``now``: an API bearer token or a page's
    session cookie, which are the same kind."""
    return request.config_dict[SESSION_TOKENS].issue(principal, now, ttl_seconds)


def verify_session_token(request: web.Request, token: str) -> Principal:
    """The principal of a valid, unexpired session token by the service's clock; 401 for anything else (whether
    it was revoked since is :func:`perks.core.auth.session_is_current`'s question)."""
    return request.config_dict[SESSION_TOKENS].verify(token, request.config_dict[CLOCK].now())


def principal_of(request: web.Request) -> Principal:
    """The principal the endpoint decorator authenticated."""
    return request[PRINCIPAL]


def spec_of(handler: Any) -> EndpointSpec | None:
    """The declaration attached to a handler, if any."""
    return getattr(handler, "__perks_endpoint__", None)


async def read_capped(request: web.Request, cap: int) -> bytes:
    """The whole request body, or 413 ``payload_too_large`` as soon as it exceeds ``cap`` bytes (for a route that
    takes more than the app-wide limit, and reads its body itself)."""
    if request.content_length is not None and request.content_length > cap:
        raise ApiError("payload_too_large", status=413)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > cap:
            raise ApiError("payload_too_large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)
