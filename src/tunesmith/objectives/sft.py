"""Next-token cross-entropy: SFT (labels on assistant turns) and continual pre-training (labels on
every token). The two differ only in their data; the objective is the same.

The step returns the *sum* of token losses; the loop divides by the number of label tokens in the
whole optimizer step, across micro-batches and processes (PITFALLS 1), so a short sequence weighs
exactly as much per token as a long one whatever the batching. Data, collation and the wrapped
module are the `Objective` defaults (token rows, `CausalLMLoss`).
"""

from __future__ import annotations

import torch

from ..data.packing import count_label_tokens
from .base import Objective


class CausalLMObjective(Objective):
    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return count_label_tokens(batch)

    def step(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss_sum = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"])
        return loss_sum, {}
