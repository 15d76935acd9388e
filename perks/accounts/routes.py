"""HTTP: sessions, staff accounts and merchant users."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from perks.accounts import service, sessions, users
from perks.accounts.models import MerchantUserCreate, Password, StaffCreate
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import (
    ALL_ROLES, BANK_ADMINS, BANK_AUDIT_READERS, BANK_STAFF_AND_MANAGERS, BANK_STAFF_WRITERS,
    BANK_WRITERS_AND_MANAGERS, USERS, Principal, ensure_merchant_scope,
)
from perks.core.endpoint import endpoint, issue_session_token, principal_of
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.validation import Body

routes = web.RouteTableDef()

NewPassword = Field(
    default=None,
    min_length=service.PASSWORD_MIN_LENGTH,
    max_length=service.PASSWORD_MAX_LENGTH,
    description="A new password: at least 8 characters; not a common password, nor the username.",
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
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        principal = await service.login(conn, body.username, body.password, now)
    return _session_response(request, principal)


def _session_response(request: web.Request, principal: Principal) -> web.Response:
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    token = issue_session_token(request, principal, now, config.session_ttl_seconds)
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


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=service.PASSWORD_MAX_LENGTH)
    new_password: str = Password


@routes.post("/api/v1/auth/password")
@endpoint(
    roles=USERS,
    body=PasswordChange,
    response=TokenResponse,
    errors=("too_many_attempts",),
    tag="sessions",
)
async def change_password(request: web.Request, body: PasswordChange) -> web.Response:
    """Change one's own password; every older session of the account ends, and a new session token is returned.

    The current password is checked as a login is: a wrong one is 400 naming `current_password`, and counts
    towards the login throttle of the username (429 after five within 15 minutes)."""
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        principal = await sessions.change_own_password(
            conn, principal_of(request), body.current_password, body.new_password, now
        )
    return _session_response(request, principal)


@routes.post("/api/v1/auth/logout")
@endpoint(roles=ALL_ROLES, status=204, tag="sessions")
async def log_out(request: web.Request) -> web.Response:
    """End every session of the caller's account, on every device (the session generation is bumped)."""
    async with request.config_dict[POOL].acquire() as conn:
        await sessions.log_out(conn, principal_of(request), request.config_dict[CLOCK].now())
    return web.Response(status=204)


class ClientSession(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


@routes.post("/api/v1/clients/{client_id}/sessions")
@endpoint(
    roles=BANK_STAFF_WRITERS,
    response=ClientSession,
    status=201,
    errors=("not_found", "client_blocked"),
    tag="sessions",
)
async def create_client_session(request: web.Request) -> web.Response:
    """Mint a session for a client, as the bank's own app would for a logged-in client.

    A blocked client gets none (403 `client_blocked`); blocking a client ends its sessions at once."""
    client_id = parse_id(request.match_info["client_id"])
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        principal = await service.client_principal(conn, principal_of(request), client_id)
    token = issue_session_token(request, principal, now, config.client_session_ttl_seconds)
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": config.client_session_ttl_seconds},
        status=201,
    )


class UserView(BaseModel):
    id: str
    username: str
    role: str
    status: Literal["active", "disabled"]
    merchant_id: str | None = None
    store_id: str | None = None


@routes.post("/api/v1/staff")
@endpoint(roles=BANK_ADMINS, body=StaffCreate, response=UserView, status=201, errors=("conflict",), tag="accounts")
async def create_staff(request: web.Request, body: StaffCreate) -> web.Response:
    """Create a bank staff account."""
    async with request.config_dict[POOL].acquire() as conn:
        user = await service.create_user(
            conn, principal_of(request), username=body.username, password=body.password, role=body.role
        )
    return json_response(user, status=201)


@routes.post("/api/v1/merchants/{merchant_id}/users")
@endpoint(
    roles=BANK_WRITERS_AND_MANAGERS,
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
    roles=BANK_STAFF_AND_MANAGERS,
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


class StaffPatch(Body):
    status: Literal["active", "disabled"] | None = None
    password: str | None = NewPassword
    role: Literal["admin", "operator", "auditor"] | None = None


class MerchantUserPatch(Body):
    status: Literal["active", "disabled"] | None = None
    password: str | None = NewPassword
    role: Literal["manager", "cashier"] | None = None
    store_id: UUID | None = Field(default=None, description="A cashier's store (one of this merchant's).")


@routes.get("/api/v1/staff")
@endpoint(roles=BANK_AUDIT_READERS, query=PageQuery, response=Page[UserView], tag="accounts")
async def list_staff(request: web.Request, query: PageQuery) -> web.Response:
    """The bank's staff accounts, oldest first."""
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await users.list_staff(conn, after, query.limit + 1)
    result = page(rows, query.limit, time_id_key)
    result["items"] = [service.user_view(row) for row in result["items"]]
    return json_response(result)


@routes.get("/api/v1/staff/{user_id}")
@endpoint(roles=BANK_AUDIT_READERS, response=UserView, errors=("not_found",), tag="accounts")
async def get_staff(request: web.Request) -> web.Response:
    """One staff account."""
    user_id = parse_id(request.match_info["user_id"])
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await users.get_user(conn, user_id))


@routes.patch("/api/v1/staff/{user_id}")
@endpoint(roles=BANK_ADMINS, body=StaffPatch, response=UserView, errors=("not_found",), tag="accounts")
async def patch_staff(request: web.Request, body: StaffPatch) -> web.Response:
    """Disable or enable a staff account, set its password or change its role (admin, operator, auditor).

    Disabling the account, a new password or another role ends every session of the account at once (on every
    worker); a disabled account's login is refused as a wrong password is (401 `invalid_credentials`). An admin
    cannot disable their own account or change their own role (400 naming the field). The audit entry never holds
    the password."""
    user_id = parse_id(request.match_info["user_id"])
    async with request.config_dict[POOL].acquire() as conn:
        user = await users.update_user(conn, principal_of(request), user_id, **body.model_dump(exclude_unset=True))
    return json_response(user)


@routes.patch("/api/v1/merchants/{merchant_id}/users/{user_id}")
@endpoint(
    roles=BANK_WRITERS_AND_MANAGERS,
    body=MerchantUserPatch,
    response=UserView,
    errors=("not_found", "merchant_suspended"),
    tag="accounts",
)
async def patch_merchant_user(request: web.Request, body: MerchantUserPatch) -> web.Response:
    """Disable or enable a merchant's user, set its password, or change its role or (a cashier's) store.

    Disabling the account, a new password, or another role or store ends every session of the account at once;
    a disabled account's login is refused as a wrong password is. Nobody disables their own account or changes
    their own role (400 naming the field). A manager changes the users of its own merchant only, and none while
    the merchant is suspended (403 `merchant_suspended`; bank staff still may). Audited, never the password."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    user_id = parse_id(request.match_info["user_id"])
    actor = principal_of(request)
    ensure_merchant_scope(actor, merchant_id)
    changes = body.model_dump(exclude_unset=True)
    async with request.config_dict[POOL].acquire() as conn:
        user = await users.update_user(conn, actor, user_id, merchant_id=merchant_id, **changes)
    return json_response(user)
