"""Batches read from CSV files or JSON lists: every bad row named by its line (or index), and a batch with any
bad row refused as a whole."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from pydantic import ValidationError

from perks.core.errors import ApiError
from perks.core.validation import field_errors

BOM = "\ufeff"
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

    def add_validation(self, position: int, exc: ValidationError) -> None:
        for field, reason in field_errors(exc).items():
            self.add(position, field, reason)

    def __bool__(self) -> bool:
        return self.total > 0

    def rejection(self) -> BatchRejected:
        """The error refusing the batch."""
        return BatchRejected(self.kept, self.unit, self.total, self.list_name)


def utf8_lines(binary: IO[bytes] | Iterable[bytes], problems: Problems,
               progress: Callable[[int], Any] | None = None) -> Iterator[str]:
    """Text lines (line endings kept, as ``csv`` wants them) of UTF-8 bytes; a BOM at the start is dropped,
    and a line that is not UTF-8 is reported and replaced."""
    for number, raw in enumerate(binary, start=1):
        if progress is not None:
            progress(len(raw))
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.add(number, "line", "not UTF-8 text")
            line = raw.decode("utf-8", errors="replace")
        if number == 1 and line.startswith(BOM):
            line = line[1:]
        yield line


def csv_records(
    lines: Iterable[str], problems: Problems, *, required: Sequence[str], optional: Sequence[str] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, {column: cell})`` of each data row; the header (line 1) names the columns, in any order.

    A bad header stops the reading (nothing else can be understood); a row with the wrong number of cells is
    reported and skipped; blank lines are skipped."""
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        problems.add(1, "header", f"not CSV: {exc}")
        return
    if header is None:
        problems.add(1, "header", "the file is empty: a header line is required")
        return
    columns = [name.strip() for name in header]
    known = set(required) | set(optional)
    bad_header = False
    for name in columns:
        if name not in known:
            problems.add(1, "header", f"unknown column {name!r}")
            bad_header = True
    for name in required:
        if name not in columns:
            problems.add(1, "header", f"missing column {name!r}")
            bad_header = True
    if len(set(columns)) != len(columns):
        problems.add(1, "header", "a column is named twice")
        bad_header = True
    if bad_header:
        return
    last_line = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.add(last_line + 1, "line", f"not CSV: {exc}")
            return
        first_line, last_line = last_line + 1, reader.line_num
        if not cells or cells == [""]:
            continue
        if len(cells) != len(columns):
            problems.add(first_line, "line", f"expected {len(columns)} fields, found {len(cells)}")
            continue
        yield first_line, dict(zip(columns, cells))
