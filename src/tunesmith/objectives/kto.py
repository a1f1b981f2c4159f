"""KTO (Ethayarajh et al. 2024) over unpaired examples: (prompt, completion, desirable or not).

Its own objective, not a variant of the paired ones: its data, its batching (the B examples, then B
mismatched (prompt_i, completion_{i+1}) sequences for the KL reference point, `collate_kto`), and
its loss units (examples). The reference is always a live model (the adapter-disabled base or a
frozen copy): the mismatched sequences change with every batch, so there is nothing to precompute.
"""

from __future__ import annotations

import torch

from ..data.preference_encode import collate_kto, encode_kto
from ..data.preference_pipeline import prepare_preference_data
from .base import Objective, SetupContext
from .logps import SequenceLogps, sequence_logps
from .preference_losses import kto_loss
from .preference_report import report_sections
from .reference import Reference


class KTOObjective(Objective):
    def prepare_data(self, tokenizer, seed: int):
        data = prepare_preference_data(self.cfg, tokenizer, "kto", encode_kto, seed)
        data.stats["desirable"] = sum(e.label for e in data.train)
        data.stats["undesirable"] = len(data.train) - data.stats["desirable"]
        return data

    def collate(self, rows, pad_id: int) -> dict:
        # Training batches always hold micro_batch_size >= 2 rows (the config enforces it); only the
        # tail of evaluation (run under no_grad) can hold one.
        return collate_kto(rows, pad_id, allow_single=not torch.is_grad_enabled())

    def wrap(self, model):
        return SequenceLogps(model, self.cfg.train.loss_chunk_size)

    def setup(self, ctx: SetupContext) -> None:
        self.reference = Reference.build(ctx.wrapper)

    def loss_units(self, batch: dict) -> int:
        return len(batch["kto_labels"])

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

    def report_sections(self, run_dir) -> list[tuple[str, str]]:
        return report_sections(run_dir, "kto")
