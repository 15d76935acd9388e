"""Field types of a client, shared by the API and the CSV import so that both validate alike."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from perks.core.fields import documented_pattern, single_line

_PHONE = re.compile(r"\+?[0-9 ()-]+")


@documented_pattern(r"^\+?(?:[ ()-]*[0-9]){3}[0-9 ()-]*$")
def phone_number(value: str) -> str:
    """Digits with an optional leading ``+`` and the usual separators."""
    if not _PHONE.fullmatch(value) or sum(char.isdigit() for char in value) < 3:
        raise PydanticCustomError("phone", "must be a phone number: digits, spaces, ( ) - and a leading +")
    return value


ExternalRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[!-~]+$",
        description="The bank's own reference of the client: printable ASCII, no spaces; unique.",
    ),
]
ClientName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(single_line)]
Phone = Annotated[
    str,
    Field(min_length=3, max_length=32, description="Digits, spaces, `( ) -` and a leading `+`."),
    AfterValidator(phone_number),
]
Birthday = Annotated[date, Field(description="`YYYY-MM-DD`, from 1900-01-01 to today.")]
Status = Literal["active", "blocked"]


MAX_TAGS = 32


def distinct_tags(tags: list[str]) -> list[str]:
    """The tags, each once, in the order first given."""
    return list(dict.fromkeys(tags))


Tag = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$", description="`[a-z0-9_]{1,32}`")]
Tags = Annotated[
    list[Tag],
    Field(max_length=64, description=f"A client's segments (`car_owner`, `parent`...): at most {MAX_TAGS} distinct "
          "codes; repeats are merged."),
    AfterValidator(distinct_tags),
]
