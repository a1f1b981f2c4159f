"""Policy-gradient losses as pure functions over per-token tensors (B, T) with a completion mask.

The clipped surrogate (PPO, Schulman et al. 2017, eq. 7; GRPO, Shao et al. 2024, eq. 3) per token:
    l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A),   rho_t = exp(logp_t - old_logp_t)
DAPO's clip-higher (Yu et al. 2025, eq. 10) is eps_high > eps_low.

Why the logged GRPO loss is ~0 while the gradient is not: at the first iteration rho = 1 exactly
(old = current, detached), so l_t = -A_i for every token; GRPO advantages are centred within each
group, so the mean over a batch is ~0 (exactly 0 with equal completion lengths). The gradient is
-A_i * d logp_t, which is not 0: it is REINFORCE with the group baseline. Only the KL term moves the
loss value.

Aggregation (`loss_type`) returns a SUM whose divisor is `loss_units`, so that the loop divides by
the unit count of the whole step over every micro-batch and process:
    grpo     sum_i (sum_t l_it / |o_i|)          / n_completions   (per-sequence mean, eq. 3)
    dr_grpo  sum_i (sum_t l_it / max_new_tokens) / n_completions   (Dr GRPO, eq. 2: no length bias)
    dapo     sum_i sum_t l_it                    / n_tokens        (DAPO, eq. 8: token level)
"""

from __future__ import annotations

import torch
from torch import Tensor


def clipped_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """Per-token loss and a bool tensor of where the clip was active (its gradient is 0 there).
    advantages: (B, T) or (B, 1) broadcast over tokens."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.min(unclipped, clipped)
    return loss, clipped < unclipped


def aggregate(per_token: Tensor, mask: Tensor, loss_type: str, max_new_tokens: int) -> Tensor:
    """The step's summed loss for `loss_type` (see the module doc); divide by `loss_units`."""
    m = mask.to(per_token.dtype)
    summed = (per_token * m).sum(dim=1)  # (B,)
    if loss_type == "grpo":
        return (summed / m.sum(dim=1).clamp(min=1)).sum()
    if loss_type == "dr_grpo":
        return (summed / max_new_tokens).sum()
    if loss_type == "dapo":
        return summed.sum()
    raise ValueError(f"unknown loss_type {loss_type!r}: use grpo, dr_grpo or dapo")


def loss_units(mask: Tensor, loss_type: str) -> int:
    """What `aggregate`'s sum is divided by: completions (grpo, dr_grpo) or completion tokens (dapo).
    A fully masked completion (mask_truncated) counts for grpo/dr_grpo: it is a sample that gives 0."""
    return int(mask.sum()) if loss_type == "dapo" else int(mask.shape[0])


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """PPO value loss (Schulman et al. 2017 as implemented in baselines / Ziegler et al. 2019):
    0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2) per token, and where clipping won."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * torch.max(a, b), b > a
