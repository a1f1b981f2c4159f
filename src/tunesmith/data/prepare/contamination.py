"""Benchmark contamination: word n-gram overlap between training rows and benchmark items.

As in the GPT-3 paper (Brown et al. 2020, sec. 4 and appendix C): text is lower-cased and split into
words (punctuation dropped); a training row that shares any 13-gram with a benchmark item is
contaminated. Benchmark items shorter than n words are matched as a whole word sequence when they
have at least `min_item_words` words (shorter ones would match by chance and are counted, not used).
The index holds one 64-bit hash per benchmark n-gram (GSM8K test: ~150k), built once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ...config import PrepareContaminationConfig
from ..readers import read_rows
from .records import Record, all_texts
from .steps import StepReport

_WORD = re.compile(r"\w+", re.UNICODE)


def norm_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _h(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest(), "little")


def _row_texts(data) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [t for v in data for t in _row_texts(v)]
    if isinstance(data, dict):
        return [t for v in data.values() for t in _row_texts(v)]
    return []


class BenchmarkIndex:
    """n-gram hashes of every benchmark item -> the item's location (file:line)."""

    def __init__(self, n: int = 13, min_item_words: int = 8):
        self.n, self.min_item_words = n, min_item_words
        self.grams: dict[int, str] = {}
        self.short_lengths: set[int] = set()  # word counts of items matched as a whole
        self.items = 0
        self.too_short = 0

    def add_item(self, texts: list[str], where: str) -> None:
        self.items += 1
        for text in texts:
            w = norm_words(text)
            if len(w) >= self.n:
                for i in range(len(w) - self.n + 1):
                    self.grams.setdefault(_h(w[i : i + self.n]), where)
            elif len(w) >= self.min_item_words:
                self.short_lengths.add(len(w))
                self.grams.setdefault(_h(w), where)
            elif w:
                self.too_short += 1

    def add_file(self, path: str) -> None:
        for row in read_rows(path):
            self.add_item(_row_texts(row.data), row.where)

    def match(self, texts: list[str]) -> tuple[str, str] | None:
        """(benchmark item, the shared words) of the first overlap found, or None."""
        for text in texts:
            w = norm_words(text)
            for size in (self.n, *sorted(self.short_lengths)):
                for i in range(len(w) - size + 1):
                    hit = self.grams.get(_h(w[i : i + size]))
                    if hit is not None:
                        return hit, " ".join(w[i : i + size])
        return None


class ContaminationCheck:
    name = "contamination"

    def __init__(self, cfg: PrepareContaminationConfig):
        self.cfg = cfg
        self.index = BenchmarkIndex(cfg.ngram, cfg.min_item_words)
        for path in cfg.benchmarks:
            self.index.add_file(path)
        self.report = StepReport(self.name)
        self.report.notes.append(
            f"{self.index.items} benchmark items from {', '.join(Path(p).name for p in cfg.benchmarks)}; "
            f"{cfg.ngram}-gram overlap; action: {cfg.action}"
            + (f"; {self.index.too_short} fields shorter than {cfg.min_item_words} words not indexed" if self.index.too_short else "")
        )

    def __call__(self, records: list[Record]) -> list[Record]:
        kept = []
        self.report.rows_in += len(records)
        for rec in records:
            hit = self.index.match(all_texts(rec))
            if hit is None:
                if self.cfg.action == "flag":
                    rec.data["_contamination"] = ""
                kept.append(rec)
                continue
            item, words = hit
            self.report.counts[f"overlaps {item.rsplit(':', 1)[0]}"] += 1
            if self.cfg.action == "drop":
                self.report.drop("contaminated", rec.where, f"shares '{words}' with {item}")
            else:
                rec.data["_contamination"] = item
                self.report.note_example("flagged", rec.where, f"shares '{words}' with {item}")
                kept.append(rec)
        self.report.rows_out += len(kept)
        return kept
