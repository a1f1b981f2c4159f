"""Advantages: GRPO's group-normalised rewards, RLOO's leave-one-out baseline, PPO's GAE.

Pure functions over tensors; rewards of one prompt's group are contiguous (`num_generations`
rows per prompt, prompt-major), which is how the rollout lays them out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath, eq. 3 / sec. 4.1.2): A_i = (r_i - mean(group)) / std(group).

    scale: "group" divides by the group's std (the paper), "batch" by the std of all rewards given,
    "none" not at all (Dr GRPO, Liu et al. 2025, sec. 3.1: the std division over-weights near-uniform
    groups). std is the unbiased sample std (torch's default, as in TRL); eps keeps a zero-std group at 0.
    """
    if rewards.dim() != 1 or rewards.numel() % group:
        raise ValueError(f"rewards must be (n_prompts * {group},); got {tuple(rewards.shape)}")
    r = rewards.view(-1, group)
    centred = (r - r.mean(dim=1, keepdim=True)).flatten()
    if scale == "none":
        return centred
    if scale == "group":
        std = r.std(dim=1, keepdim=True).expand_as(r).flatten()
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"unknown scale_rewards {scale!r}: use group, batch or none")
    return centred / (std + eps)


def zero_std_groups(rewards: Tensor, group: int) -> Tensor:
    """(n_prompts,) bool: groups whose rewards are all equal give every completion advantage 0 (no gradient)."""
    r = rewards.view(-1, group)
    return (r.max(dim=1).values - r.min(dim=1).values) == 0


def rloo_advantages(rewards: Tensor, group: int) -> Tensor:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024, eq. 4): A_i = r_i - mean_{j != i} r_j
    = (k r_i - sum_j r_j) / (k - 1), an unbiased baseline that does not use r_i itself."""
    if group < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt")
    r = rewards.view(-1, group)
    return ((group * r - r.sum(dim=1, keepdim=True)) / (group - 1)).flatten()


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), per token of (B, T) completions.

    delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum_l (gamma lam)^l delta_{t+l}; V after the last real
    token is 0 (the episode ends there). mask: 1 on real completion tokens (a prefix of each row).
    Returns (advantages, returns = advantages + values), both 0 where mask is 0.
    """
    B, T = rewards.shape
    mask = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (PPO advantage whitening); 0 outside the mask."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
