"""Optimizers and learning-rate schedules.

Weight decay applies to matrices only (not to norms, biases or 1-D adapter vectors), as in
nanoGPT and torchtune. The schedule is a plain function of the step, so resuming needs nothing but
the step number and the LambdaLR state.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..errors import ConfigError


def param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    kw = dict(lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kw)
    try:
        import bitsandbytes.optim as bnb_optim
    except ImportError as e:  # pragma: no cover - bitsandbytes is a dependency
        raise ConfigError(f"`train.optimizer: {cfg.optimizer}` needs bitsandbytes ({e})") from None
    cls = {"adamw_8bit": bnb_optim.AdamW8bit, "paged_adamw": bnb_optim.PagedAdamW, "paged_adamw_8bit": bnb_optim.PagedAdamW8bit}[cfg.optimizer]
    return cls(groups, **kw)


def lr_lambda(step: int, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based: the lr used by optimizer step `step + 1`)."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = cfg.warmup_for(total_steps)
    if warmup >= total_steps > 1:
        raise ConfigError(f"warm-up ({warmup} steps) is as long as the whole run ({total_steps} steps); lower train.warmup_steps / train.warmup_ratio")

    def f(step: int) -> float:
        return lr_lambda(step, total_steps, warmup, cfg.scheduler, cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
