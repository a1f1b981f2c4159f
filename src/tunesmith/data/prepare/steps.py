"""What every step reports: rows in, rows out, and why each dropped row was dropped.

A step is an object with `name` and `__call__(records) -> kept records` working on a chunk of
records at a time, so the pipeline streams: no step needs the whole data set in memory (dedup
keeps only hashes and signatures of the rows it kept).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EXAMPLES_PER_REASON = 3
_SHOWN = 160


@dataclass
class StepReport:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> up to 3 "where: detail"
    counts: Counter = field(default_factory=Counter)  # step-specific tallies (PII found per type, ...)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, where: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            detail = detail.replace("\n", " ")
            shown.append(f"{where}: {detail[:_SHOWN]}{'...' if len(detail) > _SHOWN else ''}" if detail else where)

    def note_example(self, reason: str, where: str, detail: str) -> None:
        """An example for a tally that is not a drop (a redaction, a flagged row)."""
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(f"{where}: {detail.replace(chr(10), ' ')[:_SHOWN]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name, "rows_in": self.rows_in, "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
            "examples": self.examples, "counts": dict(sorted(self.counts.items())), "notes": self.notes,
        }
