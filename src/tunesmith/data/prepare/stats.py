"""Token statistics of the prepared rows: percentiles, over-length rows, padding waste, histogram.

Conversations are counted exactly as training will see them: rendered with the chat template and
split into prompt (unlabelled) and response (labelled) tokens by `encode_conversation`. Text,
preference and KTO rows count their prompt and (longest) response with the plain tokenizer.

Padding waste is the share of a batch's token slots that hold padding:
  - pad to max_length: every row is a max_length slot (static shapes);
  - pad to longest: `collate` pads each micro-batch to its longest row (rounded up to 8), batches
    drawn in a seeded random order as the sampler does;
  - packing: best-fit decreasing into max_length rows (the trainer packs first-fit decreasing, which
    comes within a row or two of it).
Rows longer than max_length are left out of the waste figures (training drops or cuts them).
"""

from __future__ import annotations

import bisect
import random
from pathlib import Path

from ..encode import assistant_spans
from .filters import TokenCounter
from .records import Record, prompt_and_responses

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of already-sorted values."""
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def pad_waste_static(lengths: list[int], max_length: int) -> float:
    fit = [n for n in lengths if n <= max_length]
    return 1 - sum(fit) / (len(fit) * max_length) if fit else 0.0


def pad_waste_longest(lengths: list[int], micro_batch_size: int, seed: int = 0, multiple: int = 8) -> float:
    order = list(lengths)
    random.Random(seed).shuffle(order)
    slots = 0
    for i in range(0, len(order), micro_batch_size):
        batch = order[i : i + micro_batch_size]
        slots += len(batch) * (-(-max(batch) // multiple) * multiple)
    return 1 - sum(order) / slots if slots else 0.0


def packed_rows(lengths: list[int], max_length: int) -> int:
    """Rows of max_length that best-fit decreasing needs for these lengths (O(n log n))."""
    free: list[int] = []  # sorted free space of open rows
    for n in sorted((n for n in lengths if n <= max_length), reverse=True):
        i = bisect.bisect_left(free, n)
        if i == len(free):
            bisect.insort(free, max_length - n)
        else:
            space = free.pop(i) - n
            bisect.insort(free, space)
    return len(free)


class TokenStats:
    def __init__(self, counter: TokenCounter):
        self.count = counter
        self.prompt: list[int] = []
        self.response: list[int] = []
        self.total: list[int] = []

    def add(self, records: list[Record]) -> None:
        tok = self.count.tokenizer
        convs = [r for r in records if tok is not None and r.kind == "conversation"]
        plain = [r for r in records if not (tok is not None and r.kind == "conversation")]
        if convs:
            self._add_conversations(convs)
        if plain:
            parts = [prompt_and_responses(r) for r in plain]
            p = self.count([x[0] for x in parts])
            flat = self.count([t for _, rs in parts for t in rs])
            i = 0
            for (_, rs), np_ in zip(parts, p):
                longest = max(flat[i : i + len(rs)], default=0)
                i += len(rs)
                self.prompt.append(np_)
                self.response.append(longest)
                self.total.append(np_ + longest)

    def _add_conversations(self, records: list[Record]) -> None:
        """As `encode_conversation` counts them (same spans, same cut after the last turn), but one
        batched tokenizer call per chunk instead of one call per row."""
        texts, spans = [], []
        for rec in records:
            full, sp = assistant_spans(self.count.tokenizer, rec.data["messages"], rec.where)
            texts.append(full[: sp[-1][1]] if rec.data["messages"][-1]["role"] == "assistant" else full)
            spans.append(sp)
        enc = self.count.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for offsets, sp in zip(enc["offset_mapping"], spans):
            labelled = sum(1 for s, e in offsets if any(s < b and e > a for a, b in sp))
            self.prompt.append(len(offsets) - labelled)
            self.response.append(labelled)
            self.total.append(len(offsets))

    def summary(self, max_length: int, micro_batch_size: int, seed: int) -> dict:
        out: dict = {"unit": self.count.unit, "rows": len(self.total)}
        for name, values in (("prompt", self.prompt), ("response", self.response), ("total", self.total)):
            s = sorted(values)
            out[name] = {"min": s[0] if s else 0, "mean": round(sum(s) / len(s), 1) if s else 0.0,
                         **{f"p{p}": percentile(s, p) for p in PERCENTILES}, "max": s[-1] if s else 0, "sum": sum(s)}
        over = sum(1 for n in self.total if n > max_length)
        rows = packed_rows(self.total, max_length)
        fit = sum(n for n in self.total if n <= max_length)
        out["max_length"] = max_length
        out["over_max_length"] = over
        out["padding_waste"] = {
            "pad_to_max_length": round(pad_waste_static(self.total, max_length), 4),
            f"pad_to_longest_batch_of_{micro_batch_size}": round(pad_waste_longest([n for n in self.total if n <= max_length], micro_batch_size, seed), 4),
            "packed": round(1 - fit / (rows * max_length), 4) if rows else 0.0,
        }
        out["packed_rows"] = rows
        return out

    def plot(self, path: Path, max_length: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, (name, values) in zip(axes, (("prompt", self.prompt), ("response", self.response), ("total", self.total))):
            ax.hist(values, bins=50, color="#4C72B0")
            ax.set_title(f"{name} length ({self.count.unit})")
            ax.set_xlabel(self.count.unit)
            if name == "total":
                ax.axvline(max_length, color="#C44E52", linestyle="--", label=f"max_length {max_length}")
                ax.legend()
        axes[0].set_ylabel("rows")
        fig.tight_layout()
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
