"""The benchmark's one table and its JSON: a row per figure, with its reference, ratio, goal and verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One figure against its reference. ``passed`` None: reported only (no goal, or a stated reason)."""

    part: str
    figure: str
    value: float | None
    unit: str
    reference: float | None
    reference_name: str
    ratio: float | None
    goal: str
    passed: bool | None
    note: str = ""


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{text} {unit}".rstrip()


@dataclass
class Report:
    """Every row of a run, and whether the counter invariants held."""

    rows: list[Row] = field(default_factory=list)
    references: dict[str, list[float]] = field(default_factory=dict)
    invariants_broken: str | None = None
    load_runs: int = 0
    load_failures: int = 0

    def add(self, row: Row) -> None:
        """Add a row (and print it at once, so that a long run shows its progress)."""
        self.rows.append(row)
        print(f"  -> {row.figure}: {_number(row.value, row.unit)}"
              + (f" ({row.ratio:.2f}× {row.reference_name})" if row.ratio is not None else ""), flush=True)

    def failed(self) -> list[Row]:
        """Rows whose goal was missed."""
        return [row for row in self.rows if row.passed is False]

    def table(self) -> str:
        """The table, one line per figure, and the invariants' verdict."""
        head = ("part", "figure", "value", "reference", "ratio", "goal", "result", "note")
        body = [(r.part, r.figure, _number(r.value, r.unit),
                 f"{_number(r.reference)} {r.reference_name}".strip() if r.reference is not None else "-",
                 f"{r.ratio:.2f}×" if r.ratio is not None else "-", r.goal or "-",
                 {True: "PASS", False: "FAIL", None: "report"}[r.passed], r.note) for r in self.rows]
        widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head) - 1)]
        lines = []
        for line in [head, *body]:
            cells = [str(cell).ljust(width) for cell, width in zip(line, widths)]
            lines.append("  ".join(cells + [str(line[-1])]).rstrip())
        lines.insert(1, "  ".join("-" * width for width in widths) + "  ----")
        verdict = ("BROKEN: " + self.invariants_broken if self.invariants_broken
                   else f"held after every load run ({self.load_runs})" if self.load_runs else "no load run")
        lines.append(f"\ncounter invariants: {verdict}")
        return "\n".join(lines)

    def as_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The run as JSON: its settings, the references' runs, every row, the invariants."""
        return {**meta, "references": self.references,
                "invariants": "broken: " + self.invariants_broken if self.invariants_broken else "held",
                "load_runs_checked": self.load_runs,
                "rows": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(r).items()}
                         for r in self.rows]}
