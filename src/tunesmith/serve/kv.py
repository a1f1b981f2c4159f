"""The running batch's KV cache: one left-padded `DynamicCache` whose rows join and leave between
decode steps.

A decode step needs every row's keys and values in one tensor per layer, (B, H, T, D). Rows have
different lengths, so shorter rows are padded on the left with zeros and masked out by the
attention mask (a masked key gets zero weight, so the padding changes nothing). Joining a row pads
whichever side is shorter and concatenates along the batch; leaving selects the remaining rows and
drops leading columns that have become padding for every row. Between membership changes the
cache grows one column per step like any `DynamicCache`, so a decode step copies nothing extra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _layers(cache) -> list:
    return list(cache.layers)


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    """Pad dim -2 (the sequence of a (B, H, T, D) cache tensor) with n zeros on the left."""
    return F.pad(t, (0, 0, n, 0)) if n else t


class BatchCache:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cache = None  # DynamicCache with (B, H, T, D) per layer
        self.mask: torch.Tensor | None = None  # (B, T) long: 1 for real tokens
        self.lengths: list[int] = []  # real tokens per row (the next position id)

    def __len__(self) -> int:
        return len(self.lengths)

    def join(self, row_cache, length: int) -> None:
        """Add one row whose prefill produced `row_cache` (batch 1, `length` tokens, no padding)."""
        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache, self.mask, self.lengths = row_cache, row_mask, [length]
            return
        T = self.mask.shape[1]
        pad_row, pad_batch = max(T - length, 0), max(length - T, 0)
        for mine, theirs in zip(_layers(self.cache), _layers(row_cache), strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, pad_batch), _pad_left(theirs.keys, pad_row)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, pad_batch), _pad_left(theirs.values, pad_row)], dim=0)
        self.mask = torch.cat([F.pad(self.mask, (pad_batch, 0)), F.pad(row_mask, (pad_row, 0))], dim=0)
        self.lengths.append(length)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order); drop columns that are padding in every kept row."""
        if not rows:
            self.cache, self.mask, self.lengths = None, None, []
            return
        if rows == list(range(len(self.lengths))):
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        mask = self.mask.index_select(0, idx)
        start = int((mask.sum(0) > 0).nonzero()[0])  # first column some row still uses
        self.mask = mask[:, start:]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:]
            layer.values = layer.values.index_select(0, idx)[:, :, start:]
        self.lengths = [self.lengths[r] for r in rows]

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention_mask (B, T+1), position_ids (B, 1)) for feeding one new token per row."""
        mask = torch.cat([self.mask, torch.ones((len(self.lengths), 1), dtype=torch.long, device=self.device)], dim=1)
        return mask, torch.tensor(self.lengths, dtype=torch.long, device=self.device).unsqueeze(1)

    def advance(self) -> None:
        """Record the token the last step appended to every row (the cache grew by itself)."""
        self.mask = torch.cat([self.mask, torch.ones((len(self.lengths), 1), dtype=torch.long, device=self.device)], dim=1)
        self.lengths = [n + 1 for n in self.lengths]
