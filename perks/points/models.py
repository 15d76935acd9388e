"""What a change to a points rule carries: the source named in its path and its rate, as the API and the staff
console both read them."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from perks.core.fields import Code
from perks.core.validation import Body


class SourcePath(BaseModel):
    source: Code


class RulePut(Body):
    points_per_yuan: Decimal = Field(
        ge=0, le=10_000, decimal_places=4,
        description="Points earned per yuan (100 fen), at most 4 decimal places; a JSON number or a decimal string. "
        "An event earns floor(amount_fen × points_per_yuan / 100) points.",
    )
