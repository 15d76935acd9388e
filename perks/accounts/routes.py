"""HTTP: sessions, staff accounts and merchant users."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from perks.accounts import service
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import ensure_merchant_scope
from perks.core.endpoint import SESSION_TOKENS, endpoint, principal_of
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.validation import Body

routes = web.RouteTableDef()

Username = Field(min_length=1, max_length=64, pattern=service.USERNAME_PATTERN)
Password = Field(
    min_length=service.PASSWORD_MIN_LENGTH,
    max_length=service.PASSWORD_MAX_LENGTH,
    description="At least 8 characters; not a common password, nor the username.",
)


class TokenRequest(Body):
    # No NUL: PostgreSQL text cannot hold one, and no username contains one.
    username: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    password: str = Field(min_length=1, max_length=service.PASSWORD_MAX_LENGTH)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    role: str
    merchant_id: str | None
    store_id: str | None


@routes.post("/api/v1/auth/token")
@endpoint(body=TokenRequest, response=TokenResponse, errors=("invalid_credentials", "too_many_attempts"), tag="sessions")
async def issue_token(request: web.Request, body: TokenRequest) -> web.Response:
    """Log in with a username and password; get a session token.

    Five failures for one username within 15 minutes refuse it, even with the right password, until the
    oldest of them is 15 minutes old (429, with `Retry-After` in seconds)."""
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        principal = await service.login(conn, body.username, body.password, now)
    token = request.config_dict[SESSION_TOKENS].issue(principal, now, config.session_ttl_seconds)
    return json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": config.session_ttl_seconds,
            "role": principal.role,
            "merchant_id": principal.merchant_id,
            "store_id": principal.store_id,
        }
    )


class ClientSession(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


@routes.post("/api/v1/clients/{client_id}/sessions")
@endpoint(roles={"admin", "operator"}, response=ClientSession, status=201, errors=("not_found",), tag="sessions")
async def create_client_session(request: web.Request) -> web.Response:
    """Mint a session for a client, as the bank's own app would for a logged-in client."""
    client_id = parse_id(request.match_info["client_id"])
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        principal = await service.client_principal(conn, principal_of(request), client_id)
    token = request.config_dict[SESSION_TOKENS].issue(principal, now, config.client_session_ttl_seconds)
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": config.client_session_ttl_seconds},
        status=201,
    )


class StaffCreate(Body):
    username: str = Username
    password: str = Password
    role: Literal["admin", "operator", "auditor"]


class UserView(BaseModel):
    id: str
    username: str
    role: str
    merchant_id: str | None = None
    store_id: str | None = None


@routes.post("/api/v1/staff")
@endpoint(roles={"admin"}, body=StaffCreate, response=UserView, status=201, errors=("conflict",), tag="accounts")
async def create_staff(request: web.Request, body: StaffCreate) -> web.Response:
    """Create a bank staff account."""
    async with request.config_dict[POOL].acquire() as conn:
        user = await service.create_user(
            conn, principal_of(request), username=body.username, password=body.password, role=body.role
        )
    return json_response(user, status=201)


class MerchantUserCreate(Body):
    username: str = Username
    password: str = Password
    role: Literal["manager", "cashier"]
    store_id: UUID | None = None


@routes.post("/api/v1/merchants/{merchant_id}/users")
@endpoint(
    roles={"admin", "operator", "manager"},
    body=MerchantUserCreate,
    response=UserView,
    status=201,
    errors=("conflict", "not_found"),
    tag="accounts",
)
async def create_merchant_user(request: web.Request, body: MerchantUserCreate) -> web.Response:
    """Create a manager or cashier of a merchant; a cashier belongs to one of its stores."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    actor = principal_of(request)
    ensure_merchant_scope(actor, merchant_id)
    async with request.config_dict[POOL].acquire() as conn:
        user = await service.create_merchant_user(
            conn,
            actor,
            merchant_id,
            username=body.username,
            password=body.password,
            role=body.role,
            store_id=body.store_id,
        )
    return json_response(user, status=201)


@routes.get("/api/v1/merchants/{merchant_id}/users")
@endpoint(
    roles={"admin", "operator", "auditor", "manager"},
    query=PageQuery,
    response=Page[UserView],
    errors=("not_found",),
    tag="accounts",
)
async def list_merchant_users(request: web.Request, query: PageQuery) -> web.Response:
    """The users of a merchant."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    ensure_merchant_scope(principal_of(request), merchant_id)
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_merchant_users(conn, merchant_id, after, query.limit + 1)
    result = page(rows, query.limit, time_id_key)
    result["items"] = [service.user_view(row) for row in result["items"]]
    return json_response(result)
