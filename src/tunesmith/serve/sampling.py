"""Per-sequence sampling and text assembly: the next token from one row of logits, and the text a
client sees (incremental detokenisation, stop strings held back until they cannot start a match).

Sampling is per row with the row's own `torch.Generator`, so a seeded request gives the same tokens
whether it decodes alone or beside fifteen others (a shared generator would make a request's draws
depend on its neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()  # a fresh non-deterministic seed per sequence
    else:
        g.manual_seed(seed)
    return g


def next_token(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator) -> int:
    """One token id from one row of logits (V,). Greedy at temperature 0; otherwise temperature,
    then nucleus (top_p) filtering, then a draw from the row's own generator."""
    if p.greedy():
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= p.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class TextAssembler:
    """Turns generated token ids into text deltas, cutting at the first stop string.

    Text is decoded from all generated ids each time (a token can change how its neighbours
    decode), and a delta is released only when it is safe: not ending in an incomplete UTF-8
    character (U+FFFD) and not possibly the start of a stop string.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters already released
        self.text = ""
        self.stopped = False  # a stop string was found; `text` is cut before it

    def add(self, token_id: int) -> str:
        """Append a token; return the newly releasable text (may be empty)."""
        self.ids.append(token_id)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [at for at in (full.find(s) for s in self.stop) if at != -1]
        if hits:  # the earliest stop string wins
            self.text, self.stopped = full[:min(hits)], True
            return self._release(len(self.text))
        self.text = full
        safe = len(full) - self.hold
        if full.endswith("\ufffd"):
            safe = min(safe, len(full) - 1)
        return self._release(safe)

    def flush(self) -> str:
        """The rest of the text once the sequence has finished."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta = self.text[self.sent:upto]
        self.sent = upto
        return delta
