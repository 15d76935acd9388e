"""What a change to a partner carries: the bodies of merchants, stores and agreements, as the API and the staff
console both read them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from perks.core.validation import Body

# Printable text only: PostgreSQL refuses NUL, and control characters have no place in a name.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int) -> type[str]:
    return Annotated[  # type: ignore[return-value]
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length, pattern=_PRINTABLE)
    ]


Name = _text(200)
Category = _text(64)
City = _text(100)
Address = _text(500)
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()-]{2,30}$")]
Status = Literal["active", "suspended"]
# The agreement's columns: `integer` capacity, `bigint` price (capped far below either limit).
Capacity = Annotated[int, Field(ge=0, le=2**31 - 1)]
PriceFen = Annotated[int, Field(ge=0, le=10**12)]


class MerchantCreate(Body):
    name: Name
    category: Category
    city: City | None = None
    contact_phone: Phone | None = None


class MerchantUpdate(Body):
    # Left out: unchanged; null is refused (documented as not nullable, which is what is validated).
    name: Name = None
    category: Category = None
    city: City | None = Field(None, description="`null` clears it")
    contact_phone: Phone | None = Field(None, description="`null` clears it")
    status: Status = Field(None, description="a suspended merchant's redemptions are refused")


class StoreCreate(Body):
    name: Name
    address: Address | None = None


class StoreUpdate(Body):
    name: Name = None  # left out: unchanged; null refused
    address: Address | None = Field(None, description="`null` clears it")


class AgreementPut(Body):
    yearly_capacity: Capacity | None = Field(
        description="redemptions a year the bank pays this merchant for; `null`: no cap"
    )
    unit_price_fen: PriceFen = Field(description="what the bank pays per redemption, in fen")
