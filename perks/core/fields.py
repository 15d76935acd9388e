"""Field types and body helpers shared by the API's request models."""

from __future__ import annotations

import re
from typing import Annotated, Any, Callable, TypeVar

from pydantic import ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from perks.core.errors import BadRequest
from perks.core.pagination import decode_cursor
from perks.core.validation import Body

CODE_PATTERN = r"^[a-z0-9_]{1,32}$"
# A settlement month as perks.settlement.periods.Month.parse takes it: `YYYY-MM`, years 2000 to 9998.
MONTH_PATTERN = r"^(2[0-9]{3}|[3-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
F = TypeVar("F", bound=Callable[..., Any])


def documented_pattern(pattern: str) -> Callable[[F], F]:
    """Mark a validator with the regular expression that describes, in the OpenAPI document, what it accepts."""

    def mark(validator: F) -> F:
        validator.__json_pattern__ = pattern  # type: ignore[attr-defined]
        return validator

    return mark


@documented_pattern(r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")
def single_line(value: str) -> str:
    """Refuse a blank text or one with control characters (PostgreSQL cannot even store NUL)."""
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    if _CONTROL.search(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return value


@documented_pattern(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
def multi_line(value: str) -> str:
    """Refuse control characters other than line breaks and tabs."""
    if _CONTROL_BUT_NEWLINES.search(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return value


Code = Annotated[str, Field(pattern=CODE_PATTERN, description="`[a-z0-9_]{1,32}`")]


def refuse_null(*names: str) -> Any:
    """A validator refusing an explicit null for PATCH fields that cannot be empty.

    Only for string, number and boolean fields: behind a before-validator, strict pydantic no longer reads a
    date or an id from a JSON string."""

    def check(cls: type, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "must not be null")
        return value

    return field_validator(*names, mode="before")(classmethod(check))  # type: ignore[arg-type]


def _omitted_means_unchanged(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class Patch(Body):
    """A PATCH body: an omitted field is left as it is; null only where the field may be empty."""

    model_config = ConfigDict(json_schema_extra=_omitted_means_unchanged)

    def changes(self) -> dict[str, Any]:
        """The fields the request actually sent."""
        return {name: getattr(self, name) for name in self.model_fields_set}


def cursor_value(cursor: str | None, kind: type) -> Any:
    """The single sort key inside ``cursor`` (of type ``kind``), or 400 when it is not one of ours."""
    values = decode_cursor(cursor, 1)
    if values is None:
        return None
    if type(values[0]) is not kind:
        raise BadRequest({"cursor": "not a valid cursor"})
    return values[0]
