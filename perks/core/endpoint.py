"""One decorator per route declares who may call it, what it takes and returns; the OpenAPI
document is built from these declarations, and role checks happen here and nowhere else."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Collection

from aiohttp import web
from pydantic import BaseModel

from perks.core.appkeys import CLOCK, POOL, PRINCIPAL
from perks.core.auth import Principal, SessionTokens, session_is_current
from perks.core.errors import Forbidden, Unauthorized
from perks.core.validation import parse_body, parse_query

Handler = Callable[..., Awaitable[web.StreamResponse]]

PUBLIC: frozenset[str] = frozenset()
SESSION_TOKENS = web.AppKey("session_tokens", SessionTokens)


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
    headers: dict[str, str] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()
    consumes: str = "application/json"


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
    headers: dict[str, str] | None = None,
    alternatives: Collection[str] = (),
    consumes: str = "application/json",
    session_check: bool = True,
) -> Callable[[Handler], Handler]:
    """Declare a route: the roles allowed (empty: public), its body and query models, its response.

    ``session_check=False`` is for a route that checks the session's generation in its own first statement.

    ``consumes`` names the media type of a body the handler reads itself (``text/csv``, say; no ``body`` model)."""
    allowed = frozenset(roles)

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
        )

        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            if allowed:
                principal = authenticate(request)
                if session_check and not await session_is_current(request.config_dict[POOL], principal):
                    raise Unauthorized()
                if principal.role not in allowed:
                    raise Forbidden()
                request[PRINCIPAL] = principal
            kwargs: dict[str, Any] = {}
            if query is not None:
                kwargs["query"] = parse_query(request, query)
            if body is not None:
                kwargs["body"] = await parse_body(request, body)
            return await handler(request, **kwargs)

        run.__perks_endpoint__ = spec  # type: ignore[attr-defined]
        return run

    return wrap


def authenticate(request: web.Request) -> Principal:
    """The principal of the request's bearer session token; 401 without a valid one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    tokens = request.config_dict[SESSION_TOKENS]
    return tokens.verify(token.strip(), request.config_dict[CLOCK].now())


def principal_of(request: web.Request) -> Principal:
    """The principal the endpoint decorator authenticated."""
    return request[PRINCIPAL]


def spec_of(handler: Any) -> EndpointSpec | None:
    """The declaration attached to a handler, if any."""
    return getattr(handler, "__perks_endpoint__", None)
