"""Paired preference objectives: the reward model (Bradley-Terry) and the DPO family.

Both read (prompt, chosen, rejected) pairs and batch them with the prompt shared
(`collate_pairs`); sequence 2b of a batch is pair b's chosen, 2b + 1 its rejected. `loss_units` is
the number of pairs. KTO (unpaired examples) is its own objective in kto.py. The losses are pure
functions in preference_losses.py; the hooks are those of objectives/base.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.preference_encode import collate_pairs, encode_pair
from ..data.preference_pipeline import prepare_preference_data
from .base import Objective, SetupContext
from .logps import SequenceLogps, SequenceScores, sequence_logps
from .preference_losses import PAIR_LOSSES, bradley_terry_loss
from .preference_report import report_sections
from .reference import Reference, precompute


@dataclass
class LogpBatch:
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_mean: torch.Tensor
    rejected_mean: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


def _pair_metrics(rc: torch.Tensor, rr: torch.Tensor, lp_c: torch.Tensor, lp_r: torch.Tensor) -> dict:
    n = len(rc)
    s = lambda t: float(t.detach().float().sum())  # noqa: E731
    return {"rewards/chosen": (s(rc), n), "rewards/rejected": (s(rr), n), "rewards/margin": (s(rc - rr), n),
            "rewards/accuracy": (s(rc > rr), n), "logps/chosen": (s(lp_c), n), "logps/rejected": (s(lp_r), n)}


class PairObjective(Objective):
    """What every paired objective shares: the data, the batching and the report."""

    def prepare_data(self, tokenizer, seed: int):
        return prepare_preference_data(self.cfg, tokenizer, "pairs", encode_pair, seed)

    def collate(self, rows, pad_id: int) -> dict:
        return collate_pairs(rows, pad_id)

    def loss_units(self, batch: dict) -> int:
        return len(batch["ends"]) // 2

    def wrap(self, model):
        return SequenceLogps(model, self.cfg.train.loss_chunk_size)

    def report_sections(self, run_dir) -> list[tuple[str, str]]:
        return report_sections(run_dir, self.title())

    def title(self) -> str:
        return self.cfg.method


class RewardObjective(PairObjective):
    """Bradley-Terry reward model: a scalar head on the causal backbone, read at the last token."""
    head = "score"

    def wrap(self, model):
        return SequenceScores(model)

    def step(self, model, batch: dict):
        scores = model(batch["input_ids"], batch["position_ids"], batch["ends"], batch.get("attention_mask"),
                       batch.get("pair_spans"))  # (2B,)
        chosen, rejected = scores[0::2], scores[1::2]
        losses = bradley_terry_loss(chosen, rejected)
        n = len(losses)
        s = lambda t: float(t.detach().sum())  # noqa: E731
        return losses.sum(), {"rewards/chosen": (s(chosen), n), "rewards/rejected": (s(rejected), n),
                              "rewards/margin": (s(chosen - rejected), n), "rewards/accuracy": (s((chosen > rejected).float()), n)}


class DPOObjective(PairObjective):
    """DPO and its variants (`preference.loss`), over summed and mean response log-probs. The reference is
    a live model (`Reference`: the adapter-disabled base or a frozen copy) or, with
    `preference.precompute_ref`, a (rows, 2) table of log-probs indexed by the batch's `row_ids`."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss_fn, self.needs_ref = PAIR_LOSSES[cfg.preference.loss]
        self.reference: Reference | None = None
        self.ref_table: torch.Tensor | None = None  # (rows, 2): chosen, rejected

    def setup(self, ctx: SetupContext) -> None:
        if not self.needs_ref:
            return
        if self.cfg.preference.precompute_ref:
            rows = list(ctx.data.train) + list(ctx.data.eval)
            table = precompute(ctx, rows, self.collate, self.cfg.train.micro_batch_size, self.cfg, progress=self.cfg.train.progress)
            self.ref_table = table.to(ctx.device)
        else:
            self.reference = Reference.build(ctx.wrapper)

    def title(self) -> str:
        return f"dpo ({self.cfg.preference.loss})"

    def reference_logps(self, model, batch: dict) -> torch.Tensor:
        """(2B,) reference log-probs in the batch's sequence order (chosen_0, rejected_0, ...)."""
        if self.ref_table is not None:
            return self.ref_table[batch["row_ids"]].flatten()
        return self.reference.logps(model, batch)

    def step(self, model, batch: dict):
        sums, counts = sequence_logps(model, batch)
        lp = LogpBatch(sums[0::2], sums[1::2], sums[0::2] / counts[0::2], sums[1::2] / counts[1::2])
        if self.needs_ref:
            ref = self.reference_logps(model, batch).to(sums.dtype)
            lp.ref_chosen, lp.ref_rejected = ref[0::2], ref[1::2]
        losses, rc, rr = self.loss_fn(lp, self.cfg.preference)
        return losses.sum(), _pair_metrics(rc, rr, lp.chosen, lp.rejected)
