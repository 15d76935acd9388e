"""A batch refused as a whole: every bad row of a CSV file or a JSON list named by its line (or index), collected
while the batch is read, and the one error that refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from perks.core.errors import ApiError
from perks.core.validation import field_errors

# A file of a million bad lines would make a response (or a terminal) useless; past this many, only the count grows.
MAX_REPORTED_PROBLEMS = 10_000


@dataclass(frozen=True)
class RowProblem:
    """Why one row of a batch is refused: its position (line number or index), the field, the reason."""

    position: int
    field: str
    reason: str


class BatchRejected(ApiError):
    """A batch refused as a whole (400 ``bad_request``): nothing was applied; ``details.errors`` names every bad
    row (``line`` for a CSV file, ``index`` for a JSON list) with the field and the reason."""

    status, code = 400, "bad_request"

    def __init__(
        self, problems: Sequence[RowProblem], unit: str, total: int | None = None, list_name: str = "items"
    ) -> None:
        total = len(problems) if total is None else total
        shown = sorted(problems, key=lambda p: p.position)[:MAX_REPORTED_PROBLEMS]
        self.problems = shown
        self.unit = unit
        rows = len({p.position for p in shown})
        fields: dict[str, str] = {}
        for problem in shown:
            fields.setdefault(field_key(unit, problem.position, problem.field, list_name), problem.reason)
        details: dict[str, Any] = {
            "fields": fields,
            "errors": [{unit: p.position, "field": p.field, "reason": p.reason} for p in shown],
            "error_count": total,
        }
        if total > len(shown):
            details["truncated"] = True
        noun = "line" if unit == "line" else "item"
        message = f"Nothing was applied: {rows} {noun}{'s' if rows != 1 else ''} not valid."
        super().__init__(message=message, details=details)


def field_key(unit: str, position: int, field: str, list_name: str) -> str:
    """The ``details.fields`` key of a bad field: ``events.3.amount_fen`` (JSON) or ``line 3: amount_fen`` (CSV)."""
    if unit == "line":
        return f"line {position}: {field}"
    return f"{list_name}.{position}.{field}"


class Problems:
    """Collects the problems of a batch, keeping the first ``MAX_REPORTED_PROBLEMS`` and counting all.

    ``unit`` is ``line`` (a CSV file's line numbers) or ``index`` (positions in the JSON list ``list_name``)."""

    def __init__(self, unit: str, list_name: str = "items") -> None:
        self.unit = unit
        self.list_name = list_name
        self.kept: list[RowProblem] = []
        self.total = 0

    def add(self, position: int, field: str, reason: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_PROBLEMS:
            self.kept.append(RowProblem(position, field, reason))

    def add_repeats(self, groups: Iterable[Sequence[int]], field: str) -> None:
        """Report the positions of each group (rows with one value that must be unique) but its first, naming it."""
        for first, *later in groups:
            for position in later:
                self.add(position, field, f"repeated: first at {self.unit} {first}")

    def add_validation(self, position: int, exc: ValidationError) -> None:
        for field, reason in field_errors(exc).items():
            self.add(position, field, reason)

    def __bool__(self) -> bool:
        return self.total > 0

    def rejection(self) -> BatchRejected:
        """The error refusing the batch."""
        return BatchRejected(self.kept, self.unit, self.total, self.list_name)
