"""Preference objectives: reward model (Bradley-Terry), the DPO family, and KTO.

Each brings the hooks the shared loop and run.py call (no `if method ==` there):
    prepare_data(tokenizer, seed)  paired / unpaired rows (data/preference_pipeline.py)
    head                           "causal" or "score" (the reward model's scalar head)
    wrap(model, chunk_size)        the module the loop trains: per-sequence log-probs or scores
    setup(wrapper, data, ...)      the reference: adapter-disabled base, frozen copy, or precomputed
    collate(rows, pad_id)          one padding-free packed row per micro-batch (chosen+rejected together)
    loss_units(batch)              pairs (or examples): the loop divides the summed loss by their count
    step(model, batch)             (summed loss, {metric: (sum, count)})
The losses themselves are pure functions in preference_losses.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.preference_encode import collate_kto, collate_pairs
from ..data.preference_pipeline import prepare_preference_data
from .logps import SequenceLogps, SequenceScores, sequence_logps
from .preference_report import report_sections
from .preference_losses import PAIR_LOSSES, bradley_terry_loss, kto_loss
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


class _Paired:
    kind = "pairs"
    head = "causal"

    def __init__(self, cfg):
        self.cfg = cfg

    def prepare_data(self, tokenizer, seed: int):
        return prepare_preference_data(self.cfg, tokenizer, self.kind, seed)

    def collate(self, rows, pad_id: int) -> dict:
        return collate_pairs(rows, pad_id)

    def loss_units(self, batch: dict) -> int:
        return len(batch["ends"]) // 2

    def wrap(self, model, chunk_size: int):
        return SequenceLogps(model, chunk_size)

    def setup(self, wrapper, data, pad_id: int, device, say=print) -> None:
        """A reward model has no reference model to prepare."""

    def report_sections(self, run_dir) -> list[tuple[str, str]]:
        return report_sections(run_dir, self.cfg.method if self.cfg.method != "dpo" else f"dpo ({self.cfg.preference.loss})")


class RewardObjective(_Paired):
    """Bradley-Terry reward model: a scalar head on the causal backbone, read at the last token."""
    head = "score"

    def wrap(self, model, chunk_size: int):
        return SequenceScores(model)

    def step(self, model, batch: dict):
        scores = model(batch["input_ids"], batch["position_ids"], batch["ends"], batch.get("attention_mask"))  # (2B,)
        chosen, rejected = scores[0::2], scores[1::2]
        losses = bradley_terry_loss(chosen, rejected)
        n = len(losses)
        s = lambda t: float(t.detach().sum())  # noqa: E731
        return losses.sum(), {"rewards/chosen": (s(chosen), n), "rewards/rejected": (s(rejected), n),
                              "rewards/margin": (s(chosen - rejected), n), "rewards/accuracy": (s((chosen > rejected).float()), n)}


class DPOObjective(_Paired):
    """DPO and its variants (`dpo.loss`), over summed and mean response log-probs."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss_fn, self.needs_ref = PAIR_LOSSES[cfg.preference.loss]
        self.reference: Reference | None = None

    def setup(self, wrapper, data, pad_id: int, device, say=print) -> None:
        if not self.needs_ref:
            return
        if self.cfg.preference.precompute_ref:
            precompute(wrapper, {"train": data.train, "eval": data.eval}, self.collate, pad_id, self.cfg.train.micro_batch_size,
                       device, self.cfg, say=say, progress=self.cfg.train.progress)
            self.reference = Reference(None)
        else:
            self.reference = Reference.build(wrapper, needs_model=True)

    def _ref(self, model, batch: dict) -> torch.Tensor:
        pre = batch["ref_logps"]
        if bool(torch.isfinite(pre).all()):
            return pre
        return self.reference.logps(model, batch)

    def step(self, model, batch: dict):
        sums, counts = sequence_logps(model, batch)
        lp = LogpBatch(sums[0::2], sums[1::2], sums[0::2] / counts[0::2], sums[1::2] / counts[1::2])
        if self.needs_ref:
            ref = self._ref(model, batch).to(sums.dtype)
            lp.ref_chosen, lp.ref_rejected = ref[0::2], ref[1::2]
        losses, rc, rr = self.loss_fn(lp, self.cfg.preference)
        return losses.sum(), _pair_metrics(rc, rr, lp.chosen, lp.rejected)


class KTOObjective(_Paired):
    """KTO over unpaired examples; the KL reference point comes from mismatched pairs of the batch."""
    kind = "kto"

    def collate(self, rows, pad_id: int) -> dict:
        # Training batches always hold micro_batch_size >= 2 rows (the config enforces it); only the
        # tail of evaluation (run under no_grad) can hold one.
        return collate_kto(rows, pad_id, allow_single=not torch.is_grad_enabled())

    def loss_units(self, batch: dict) -> int:
        return len(batch["kto_labels"])

    def setup(self, wrapper, data, pad_id: int, device, say=print) -> None:
        self.reference = Reference.build(wrapper, needs_model=True)

    def step(self, model, batch: dict):
        n = len(batch["kto_labels"])
        sums, _ = sequence_logps(model, batch)
        ref = self.reference.logps(model, batch).to(sums.dtype)
        kl = (sums[n:].detach() - ref[n:]).mean()
        labels = batch["kto_labels"]
        c = self.cfg.preference
        losses, rewards = kto_loss(sums[:n], ref[:n], labels, kl, c.beta, c.desirable_weight, c.undesirable_weight)
        good, bad = labels.float(), (~labels).float()
        lp = sums[:n].detach().float()
        s = lambda t: float(t.sum())  # noqa: E731
        return losses.sum(), {"rewards/chosen": (s(rewards * good), int(good.sum())), "rewards/rejected": (s(rewards * bad), int(bad.sum())),
                              "logps/chosen": (s(lp * good), int(good.sum())), "logps/rejected": (s(lp * bad), int(bad.sum())),
                              "kl": (float(kl) * n, n)}
