"""Model-merging methods as pure functions over tensors, chosen by name from `MERGE_METHODS`.

Every method takes the same tensor of each model (`tensors`, one per model, same shape), their
`weights`, the base model's tensor where the method needs one, and its own parameters, and returns
the merged tensor in fp32. The runner (`merge/models.py`) applies them tensor by tensor, reading
one tensor of each input model at a time.

Read (never copied) for the conventions: mergekit's `merge_methods/` (sign election by the sum of
the weighted deltas, disjoint mean divided by the weights that agree) and PEFT's
`utils/merge_utils.py` (magnitude pruning with `density`, DARE's random pruning with rescale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class MergeParams:
    """Per-tensor parameters; the runner resolves per-tensor rules into these numbers."""

    density: float | tuple[float, ...] = 1.0  # TIES/DARE: fraction of each task vector kept (or one per model)
    t: float = 0.5  # SLERP: 0 gives the first model, 1 the second
    normalize: bool = True  # linear/TIES/DARE: divide by the sum of the weights
    scale: float = 1.0  # task arithmetic/TIES/DARE: lambda, the factor on the merged task vector
    generator: torch.Generator | None = None  # DARE's random drop


def _as_f32(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.to(torch.float32) for t in tensors])  # (M, *shape)


def _weights_like(weights: list[float], stacked: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float32)
    return w.view(-1, *([1] * (stacked.dim() - 1)))  # (M, 1, ..., 1)


def linear(tensors, weights, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """Model soup (Wortsman et al. 2022, "Model soups", eq. 1): sum_i w_i theta_i / sum_i w_i."""
    x = _as_f32(tensors)
    w = _weights_like(weights, x)
    out = (w * x).sum(0)
    return out / w.sum() if p.normalize else out


def slerp(tensors, weights=None, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """Spherical interpolation of two tensors (Shoemake 1985, "Animating rotation with quaternion
    curves"): with cos(Omega) = <v0/|v0|, v1/|v1|>,
    slerp(v0, v1; t) = sin((1-t) Omega)/sin(Omega) v0 + sin(t Omega)/sin(Omega) v1.
    Nearly parallel tensors (|cos| > 0.9995) fall back to linear interpolation, where sin(Omega)->0.
    """
    if len(tensors) != 2:
        raise ConfigError(f"`method: slerp` merges exactly 2 models; got {len(tensors)}")
    v0, v1 = (t.to(torch.float32) for t in tensors)
    n0, n1 = v0.norm(), v1.norm()
    if n0 == 0 or n1 == 0:
        return (1 - p.t) * v0 + p.t * v1
    dot = float((v0.flatten() @ v1.flatten()) / (n0 * n1))
    if abs(dot) > 0.9995:
        return (1 - p.t) * v0 + p.t * v1
    omega = math.acos(max(-1.0, min(1.0, dot)))
    s = math.sin(omega)
    return (math.sin((1 - p.t) * omega) / s) * v0 + (math.sin(p.t * omega) / s) * v1


def task_vectors(tensors, base) -> torch.Tensor:
    """tau_i = theta_i - theta_base (Ilharco et al. 2023, "Editing models with task arithmetic", eq. 1)."""
    if base is None:
        raise ConfigError("this merge method needs `base_model` (task vectors are differences from the base)")
    return _as_f32(tensors) - base.to(torch.float32)  # (M, *shape)


def task_arithmetic(tensors, weights, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """theta = theta_base + lambda sum_i w_i tau_i (Ilharco et al. 2023, eq. 2); no normalisation."""
    tau = task_vectors(tensors, base)
    return base.to(torch.float32) + p.scale * (_weights_like(weights, tau) * tau).sum(0)


def _per_model(density, n: int) -> list[float]:
    return list(density) if isinstance(density, (tuple, list)) else [float(density)] * n


def trim_magnitude(tau: torch.Tensor, density) -> torch.Tensor:
    """Keep the `density` fraction (one value, or one per model) of largest-magnitude entries of each
    task vector, zero the rest (TIES step 1, "Trim"). tau: (M, *shape)."""
    flat = tau.reshape(tau.shape[0], -1)
    out = torch.zeros_like(flat)
    for i, d in enumerate(_per_model(density, tau.shape[0])):
        k = int(round(min(d, 1.0) * flat.shape[1]))
        if k >= flat.shape[1]:
            out[i] = flat[i]
        elif k > 0:
            idx = flat[i].abs().topk(k).indices
            out[i, idx] = flat[i, idx]
    return out.reshape(tau.shape)


def ties_combine(tau: torch.Tensor, w: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """TIES steps 2-3 (Yadav et al. 2023, "TIES-Merging", Alg. 1): elect the sign of each entry as
    sign(sum_i w_i tau_i), then average only the entries that agree with it (disjoint mean):
    tau_m = sum_{i in A} w_i tau_i / sum_{i in A} w_i, A = {i : sign(tau_i) = elected, tau_i != 0}."""
    weighted = w * tau
    elected = torch.sign(weighted.sum(0))
    agree = (torch.sign(tau) == elected) & (tau != 0)
    total = (weighted * agree).sum(0)
    if not normalize:
        return total
    denom = (w * agree).sum(0)
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.where(denom == 0, torch.zeros_like(total), total / safe)


def ties(tensors, weights, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """TIES-Merging: trim each task vector to `density`, elect signs, disjoint mean, add to the base
    scaled by lambda (Yadav et al. 2023, Alg. 1)."""
    tau = trim_magnitude(task_vectors(tensors, base), p.density)
    merged = ties_combine(tau, _weights_like(weights, tau), p.normalize)
    return base.to(torch.float32) + p.scale * merged


def dare_drop(tau: torch.Tensor, density, generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE (Yu et al. 2024, "Language models are Super Mario", eq. 2): drop each entry with
    probability 1 - density and rescale the survivors by 1 / density, so E[result] = tau.
    tau: (M, *shape); density: one value or one per model."""
    d = torch.tensor(_per_model(density, tau.shape[0]), dtype=torch.float32)
    d = d.view(-1, *([1] * (tau.dim() - 1)))  # (M, 1, ..., 1)
    if bool((d >= 1.0).all()):
        return tau
    keep = torch.rand(tau.shape, generator=generator) < d
    return torch.where(keep, tau / d.clamp_min(1e-12), torch.zeros_like(tau))


def dare_linear(tensors, weights, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """DARE then task arithmetic: theta_base + lambda sum_i w_i DARE(tau_i)."""
    tau = dare_drop(task_vectors(tensors, base), p.density, p.generator)
    w = _weights_like(weights, tau)
    merged = (w * tau).sum(0)
    return base.to(torch.float32) + p.scale * merged


def dare_ties(tensors, weights, base=None, p: MergeParams = MergeParams()) -> torch.Tensor:
    """DARE's random drop with rescale, then TIES sign election and disjoint mean."""
    tau = dare_drop(task_vectors(tensors, base), p.density, p.generator)
    merged = ties_combine(tau, _weights_like(weights, tau), p.normalize)
    return base.to(torch.float32) + p.scale * merged


MergeFn = Callable[..., torch.Tensor]
MERGE_METHODS: dict[str, MergeFn] = {
    "linear": linear,
    "slerp": slerp,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare_linear": dare_linear,
    "dare_ties": dare_ties,
}
NEEDS_BASE = {"task_arithmetic", "ties", "dare_linear", "dare_ties"}
