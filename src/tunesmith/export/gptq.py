"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", Algorithm 1), written here because no maintained implementation installs on this
stack: gptqmodel 7.x needs torch >= 2.14 and CUDA builds, AutoGPTQ is archived.

For a linear layer with weight W (out, in) and calibration inputs X (n, in), GPTQ minimises
||X W^T - X Q^T||^2 one input column at a time. With H = 2 X^T X / n (+ damping lambda I) and
U = chol(H^-1) upper-triangular, column j is rounded to the grid and the rounding error, scaled
by 1 / U_jj, is pushed onto the columns not yet quantized through row j of U (eq. 3 of the
paper, done in blocks of 128 columns as the reference code does). Optional act-order quantizes
columns by decreasing diag(H); groups get their own (scale, zero) computed when the group starts.
"""

from __future__ import annotations

import torch

from .quantize_pack import dequantize_int, grid_params, quantize_int


class HessianAccumulator:
    """Running H = 2/n sum_k x_k x_k^T over every token seen by a linear layer."""

    def __init__(self, in_features: int):
        self.H = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)  # (tokens, in)
        m = x.shape[0]
        self.H *= self.n / (self.n + m)
        self.n += m
        self.H += (2.0 / self.n) * (x.t() @ x)


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1, raising the damping until it exists."""
    mean_diag = H.diagonal().mean().clamp_min(1e-12)
    for attempt in range(6):
        Hd = H + (damp * 10**attempt) * mean_diag * torch.eye(H.shape[0], dtype=H.dtype)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise ValueError("the Hessian is not positive definite even with 1e5x damping; use more calibration text")


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = True,
                  act_order: bool = False, damp: float = 0.01, block_size: int = 128) -> dict:
    """Quantize W (out, in) against Hessian H (in, in).

    Returns q (out, in) integers, scale/zero (out, groups), g_idx (in,) and the dequantized weight
    `deq` (out, in) — exactly what a GPTQ reader computes from the packed tensors.
    """
    W = W.to(torch.float64).clone()
    rows, cols = W.shape
    group_size = cols if group_size == -1 or group_size >= cols else group_size
    H = H.to(torch.float64).clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    U = _inverse_cholesky(H, damp)

    n_groups = (cols + group_size - 1) // group_size
    Q = torch.zeros_like(W)
    scales, zeros = torch.zeros(rows, n_groups, dtype=torch.float64), torch.zeros(rows, n_groups, dtype=torch.float64)
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        W1, Err = W[:, b0:b1].clone(), torch.zeros(rows, b1 - b0, dtype=torch.float64)
        U1 = U[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = b0 + i
            if j % group_size == 0:  # a new group: its grid from the (already error-corrected) columns ahead
                g = j // group_size
                ahead = torch.cat([W1[:, i:], W[:, b1:]], 1)[:, :group_size]
                s, z = grid_params(ahead.float(), bits, sym)
                scales[:, g], zeros[:, g] = s.double(), z.double()
            g = j // group_size
            w = W1[:, i]
            q = dequantize_int(quantize_int(w[:, None], scales[:, g], zeros[:, g], bits), scales[:, g], zeros[:, g])[:, 0]
            Q[:, j] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]  # error feedback onto the columns left in the block
            Err[:, i] = err
        W[:, b1:] -= Err @ U[b0:b1, b1:]  # and onto every later block at once

    inv = torch.argsort(perm)
    g_idx = (torch.arange(cols) // group_size)[inv]  # group of each original column
    Q = Q[:, inv]
    q_int = quantize_int(Q, scales[:, g_idx], zeros[:, g_idx], bits)
    deq = dequantize_int(q_int.double(), scales[:, g_idx], zeros[:, g_idx])
    return {"q": q_int.to(torch.int64), "scale": scales.float(), "zero": zeros.float(), "g_idx": g_idx,
            "deq": deq.float(), "perm": perm}


def rtn_quantize(W: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = True) -> dict:
    """Round-to-nearest per group: the baseline GPTQ and AWQ must beat."""
    rows, cols = W.shape
    group_size = cols if group_size == -1 or group_size >= cols else group_size
    g_idx = torch.arange(cols) // group_size
    n_groups = int(g_idx.max()) + 1
    scales, zeros = torch.zeros(rows, n_groups), torch.zeros(rows, n_groups)
    for g in range(n_groups):
        scales[:, g], zeros[:, g] = grid_params(W[:, g_idx == g].float(), bits, sym)
    q = quantize_int(W.float(), scales[:, g_idx], zeros[:, g_idx], bits)
    return {"q": q.to(torch.int64), "scale": scales, "zero": zeros, "g_idx": g_idx,
            "deq": dequantize_int(q, scales[:, g_idx], zeros[:, g_idx])}
