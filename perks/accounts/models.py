"""What creating an account carries: the bodies of a staff account and a merchant user, as the API and the staff
console both read them."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from perks.accounts import service
from perks.core.validation import Body

Username = Field(min_length=1, max_length=64, pattern=service.USERNAME_PATTERN)
Password = Field(
    min_length=service.PASSWORD_MIN_LENGTH,
    max_length=service.PASSWORD_MAX_LENGTH,
    description="At least 8 characters; not a common password, nor the username.",
)


class StaffCreate(Body):
    username: str = Username
    password: str = Password
    role: Literal["admin", "operator", "auditor"]


class MerchantUserCreate(Body):
    username: str = Username
    password: str = Password
    role: Literal["manager", "cashier"]
    store_id: UUID | None = None
