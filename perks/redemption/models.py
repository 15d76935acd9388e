"""What a void carries: its reason, as the API and the staff console both read it."""

from __future__ import annotations

from pydantic import Field

from perks.core.validation import Body


class VoidRequest(Body):
    reason: str = Field(min_length=1, max_length=500)
