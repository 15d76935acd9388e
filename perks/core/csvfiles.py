"""CSV files in and out: downloads that Python's csv module and a spreadsheet both read back exactly, Chinese
included, and uploads read line by line with every bad line reported."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

from aiohttp import web
from pydantic import Field

from perks.core.batches import Problems
from perks.core.validation import Query

T = TypeVar("T")

# Excel takes a UTF-8 file for its local code page unless it starts with a byte-order mark.
BOM = "\ufeff"
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such text gets a leading
# apostrophe, which spreadsheets hide and treat as "text". Numbers are written as numbers, signs and all.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class FormatQuery(Query):
    """``?format=json`` (the default) or ``?format=csv``."""

    format: Literal["json", "csv"] = Field("json", description="`csv` for a spreadsheet download.")


def cell(value: Any) -> Any:
    """One value as a CSV cell: empty for ``None``, RFC 3339 for times, whole floats as integers, text defused of
    formulas."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        # As a spreadsheet writes it back: 50.0 is 50.
        return int(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The header and rows as CSV text: RFC 4180 quoting, CRLF line ends, a byte-order mark first."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
    return out.getvalue()


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> web.Response:
    """A CSV download named ``filename`` (ASCII, built by the caller from ids and dates, never from input)."""
    return web.Response(
        body=csv_text(header, rows).encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def dict_rows(items: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """The ``columns`` of each item, in order."""
    return [[item[column] for column in columns] for item in items]


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


def file_records(
    binary: IO[bytes] | Iterable[bytes],
    problems: Problems,
    read: Callable[[int, Mapping[str, str]], T | None],
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    progress: Callable[[int], Any] | None = None,
) -> Iterator[T]:
    """What ``read`` makes of each data row of a CSV file's bytes (an open file, or its lines), lazily: UTF-8 lines,
    the header naming ``required`` and ``optional`` columns, then the rows ``read`` accepts. The header and every
    bad line go to ``problems`` (``read`` reports why it refuses a row, with ``None``); ``progress(n)`` hears
    of each line's bytes."""
    for line, cells in csv_records(utf8_lines(binary, problems, progress), problems, required=required,
                                   optional=optional):
        record = read(line, cells)
        if record is not None:
            yield record
