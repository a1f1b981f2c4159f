"""GRPO (Shao et al. 2024) and its variants Dr GRPO and DAPO's token-level loss, as an objective.

Advantages are group-normalised rewards (advantages.py); the loss is the clipped surrogate
(losses.py) aggregated by `rl.loss_type`, plus `beta` x the per-token KL to the reference when
`rl.kl_in: loss`. With `kl_in: reward` the KL (summed over the completion) is subtracted from the
reward before the advantages. At `num_iterations: 1` the old log-probs are the step's own,
detached: the ratio is exactly 1 and the gradient is REINFORCE's with the group baseline.
"""

from __future__ import annotations

import torch

from .advantages import group_advantages, zero_std_groups
from .batch import Sample, unflatten
from .kl import kl_per_token
from .losses import aggregate, clipped_surrogate, loss_units
from .online import OnlineRLObjective


class GRPOObjective(OnlineRLObjective):
    def needs_reference(self) -> bool:
        return self.rl.beta > 0

    def _rewards(self, samples: list[Sample]) -> torch.Tensor:
        r = torch.tensor([s.reward for s in samples], dtype=torch.float64)
        if self.rl.beta > 0 and self.rl.kl_in == "reward":
            r = r - self.rl.beta * torch.tensor([s.kl for s in samples], dtype=torch.float64)
        return r

    def group_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return group_advantages(rewards, self.rl.num_generations, self.rl.scale_rewards)

    def advantages(self, samples: list[Sample]) -> None:
        G = self.rl.num_generations
        r = self._rewards(samples)
        adv = self.group_advantages(r)
        zero = zero_std_groups(r, G).repeat_interleave(G)
        std = float(r.std()) if len(r) > 1 else 0.0
        for s, a, z in zip(samples, adv.tolist(), zero.tolist()):
            s.advantage, s.zero_std, s.reward_std = a, z, std

    def loss_units(self, batch: dict) -> int:
        # A micro-batch whose every completion is masked (mask_truncated) still counts one unit, so a
        # step where all were truncated trains nothing (loss 0) instead of failing for lack of units.
        return max(1, loss_units(batch["mask"] & batch["train"][:, None], self.rl.loss_type))

    def step(self, model, batch: dict):
        mask = batch["mask"]
        flat, entropy = model(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"], entropy=True,
                              attention_mask=batch.get("attention_mask"),
                              segment_blocks=batch.get("segment_blocks"))
        logps = unflatten(flat, mask)
        old = batch["old_logps"] if self.reuse() > 1 else logps.detach()
        per_token, clipped = clipped_surrogate(logps, old, batch["advantage"][:, None].to(logps.dtype),
                                               self.rl.epsilon, self.rl.clip_high())
        if self.rl.beta > 0 and self.rl.kl_in == "loss":
            per_token = per_token + self.rl.beta * kl_per_token(logps, batch["ref_logps"], self.rl.kl_estimator)
        train_mask = mask & batch["train"][:, None]
        loss = aggregate(per_token, train_mask, self.rl.loss_type, self.rl.max_new_tokens)
        return loss, self.metrics_of(batch, train_mask, logps, clipped, unflatten(entropy, mask))
