"""Domain errors: each carries the contract's status and code; the middleware renders them."""

from __future__ import annotations

from typing import Any

# The human text for every code the service returns. The portal translates codes itself.
MESSAGES: dict[str, str] = {
    "bad_request": "The request is not valid.",
    "unauthorized": "A valid session token is required.",
    "invalid_credentials": "Wrong username or password.",
    "forbidden": "Your role may not do this.",
    "not_found": "No such object.",
    "method_not_allowed": "This method is not allowed here.",
    "conflict": "This conflicts with an existing object.",
    "payload_too_large": "The request body is too large.",
    "unsupported_media_type": "The request body must be sent with the documented content type.",
    "too_many_attempts": "Too many failed attempts; try again later.",
    "idempotency_key_reused": "This Idempotency-Key was used with a different request.",
    "database_unavailable": "The database is unavailable; try again shortly.",
    "internal_error": "Something went wrong on our side.",
    "invalid_token": "This is not a valid voucher.",
    "merchant_suspended": "This merchant is suspended.",
    "token_expired": "This voucher has expired.",
    "voucher_already_redeemed": "This voucher has already been redeemed.",
    "voucher_superseded": "A newer voucher for this perk has been issued.",
    "client_blocked": "This client is blocked.",
    "perk_not_offered": "This merchant does not offer this perk.",
    "not_entitled": "The client's tier has no entitlement to this perk now.",
    "quota_exhausted": "The client's yearly quota for this perk is used up.",
    "monthly_cap_reached": "The client's monthly cap for this perk is used up.",
    "merchant_capacity_exhausted": "This merchant's yearly capacity for this perk is used up.",
    "already_voided": "This redemption is already voided.",
    "void_window_closed": "This redemption can no longer be voided here.",
}


class ApiError(Exception):
    """An error the client caused or must be told about, in the contract's shape."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        code: str | None = None,
        message: str | None = None,
        *,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.message = message or MESSAGES.get(self.code, self.code.replace("_", " "))
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.code)

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status, code = 400, "bad_request"

    def __init__(self, fields: dict[str, str] | None = None, message: str | None = None) -> None:
        super().__init__(message=message, details={"fields": fields} if fields else {})


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, code: str = "unauthorized", message: str | None = None) -> None:
        super().__init__(code, message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class TooManyAttempts(ApiError):
    status, code = 429, "too_many_attempts"


class DatabaseUnavailable(ApiError):
    status, code = 503, "database_unavailable"


class Refusal(ApiError):
    """A voucher refused when scanning or redeeming; the code names the first rule that refused it."""

    STATUS = {
        "invalid_token": 400,
        "merchant_suspended": 403,
        "token_expired": 410,
        "voucher_already_redeemed": 409,
        "voucher_superseded": 409,
        "client_blocked": 403,
        "perk_not_offered": 409,
        "not_entitled": 409,
        "quota_exhausted": 409,
        "monthly_cap_reached": 409,
        "merchant_capacity_exhausted": 409,
    }

    def __init__(self, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, status=self.STATUS[code], details=details)
