"""What a change to the catalogue carries: the bodies of tiers, perks and entitlements, as the API and the staff
console both read them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from perks.core.fields import Code, Patch, multi_line, refuse_null, single_line
from perks.core.validation import Body

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1

# Tiers ----------------------------------------------------------------------------------------------------------

TierName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(single_line)]
Rank = Annotated[int, Field(ge=0, le=INT4_MAX, description="Unique; a higher rank is a better tier.")]
MinPoints = Annotated[int, Field(ge=0, le=INT8_MAX)]


class TierCreate(Body):
    code: Code
    name: TierName
    rank: Rank
    min_points: MinPoints


class TierPatch(Patch):
    name: TierName = None
    rank: Rank = None
    min_points: MinPoints = None

    _not_null = refuse_null("name", "rank", "min_points")


# Perks ----------------------------------------------------------------------------------------------------------

PerkName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(single_line)]
Category = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(single_line)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(multi_line)]
VoucherTtl = Annotated[
    int, Field(ge=30, le=2_592_000, description="How long a voucher for this perk stays valid, in seconds.")
]


class PerkCreate(Body):
    code: Code
    name: PerkName
    category: Category
    description: Description | None = None
    voucher_ttl_seconds: VoucherTtl = 300
    birthday_only: bool = Field(False, description="Usable only in the client's birthday month.")


class PerkPatch(Patch):
    name: PerkName = None
    category: Category = None
    description: Description | None = None
    voucher_ttl_seconds: VoucherTtl = None
    birthday_only: bool = None  # type: ignore[assignment]

    _not_null = refuse_null("name", "category", "voucher_ttl_seconds", "birthday_only")


# Entitlements ---------------------------------------------------------------------------------------------------


class EntitlementPut(Body):
    """Both fields are required, null included: an unlimited quota is granted on purpose, never by omission."""

    yearly_quota: int | None = Field(
        ge=0, le=INT4_MAX, description="Uses a year; null: unlimited (uses are still counted)."
    )
    monthly_cap: int | None = Field(ge=1, le=INT4_MAX, description="Uses a calendar month; null: no monthly cap.")
    required_tag: Code | None = Field(
        None, description="A client tag (segment) the client must carry to be entitled; null or left out: none."
    )
