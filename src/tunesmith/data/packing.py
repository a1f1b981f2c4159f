"""Rows for the model: padding-free packing and collation.

A row is a list of segments (examples). `position_ids` restart at 0 for each segment, and the
model is called with `attention_mask=None`: transformers then derives a block-diagonal causal
mask from the restarts (`find_packed_sequence_indices`), so no example attends to another
(PITFALLS 2). The first label of each segment is ignored, so no token is ever predicted from the
previous example's last token. Unpacked rows are the one-segment case of the same thing, padded
on the right; with a causal mask real tokens never see the padding, so no attention mask is
needed there either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from .encode import IGNORE_INDEX, Encoded


@dataclass
class Row:
    segments: list[Encoded] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    @property
    def n_labels(self) -> int:
        return sum(s.n_labels for s in self.segments)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins whose lengths sum to at most `capacity`, longest first, each into
    the first bin with room. Used for SFT rows (`pack`) and for pairs sharing a row (preference)."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for k, room in enumerate(free):
            if room >= lengths[i]:
                bins[k].append(i)
                free[k] -= lengths[i]
                break
        else:
            bins.append([i])
            free.append(capacity - lengths[i])
    return bins


def pack(examples: list[Encoded], max_length: int, seed: int = 0) -> list[Row]:
    """First-fit decreasing into rows of at most max_length tokens, then shuffled (seeded).

    FFD keeps padding below a few percent; the shuffle undoes its sort by length so a batch is not
    all long or all short examples.
    """
    for e in examples:
        if len(e) > max_length:
            raise ValueError(f"{e.where}: {len(e)} tokens > max_length {max_length}; filter before packing")
    bins = first_fit_decreasing([len(e) for e in examples], max_length)
    rows = [Row([examples[i] for i in b]) for b in bins]
    random.Random(seed).shuffle(rows)
    return rows


def unpacked(examples: list[Encoded]) -> list[Row]:
    return [Row([e]) for e in examples]


PAD_MULTIPLE = 8  # row lengths are rounded up to a multiple of 8 (tensor-core friendly shapes)


def padded_length(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def collate(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """(B, T) input_ids, labels and position_ids, right-padded to the longest row of the batch."""
    longest = max(len(r) for r in rows)
    T = padded_length(longest)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), T), dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for seg in row.segments:
            n = len(seg)
            input_ids[b, t : t + n] = torch.tensor(seg.input_ids)
            labels[b, t : t + n] = torch.tensor(seg.labels)
            labels[b, t] = IGNORE_INDEX  # never predicted from the previous segment
            position_ids[b, t : t + n] = torch.arange(n)
            t += n
        # The padding tail continues the last segment's positions: causal attention keeps it out of
        # every real token, and an unpacked row stays one sequence (the fast plain causal mask).
        position_ids[b, t:] = torch.arange(n, n + T - t)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def count_label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that contribute to the loss: labels after the one-position shift."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
