"""Token cross-entropy without materialising the (B, T, V) logits.

With a 128k vocabulary the logits of one micro-batch outweigh the whole model's activations:
2048 tokens x 128256 x 4 bytes is 1 GiB, and autograd keeps a second one for the softmax grad.
`fused_linear_cross_entropy` runs the lm_head and the loss together over row chunks and computes
the gradients in the same pass (softmax - onehot is known the moment the lse is), so only one
(chunk_size, V) fp32 block is alive at a time and the vocabulary is swept once. The same idea as
Liger-Kernel's FusedLinearCrossEntropy and Apple's Cut Cross-Entropy (Wijmans et al., 2024),
written here in plain torch.

Both functions return the SUM of the token losses over labeled positions: the training loop
divides by its own token count, which is what gradient accumulation needs.
"""

import torch
from torch import Tensor
import torch.nn.functional as F

IGNORE_INDEX = -100
# Most elements of a (C, V) logits chunk: 2**26 fp32 is 256 MiB. Smaller chunks cost a little speed
# (more, smaller matmuls); measured at V = 128,256 on an H100, 8,192 tokens: 2,048-row chunks peak
# at 3.9 GB over the inputs, against 12 GB for plain logits (bench/gpu_check.py).
CHUNK_ELEMENTS = 1 << 26
# On the CPU the loss runs after every activation of the step is already saved, so its transient
# (the chunk, its exp and its product with the head: ~2-3 chunks) lands on top of the step's peak.
# 2**24 fp32 (64 MiB, ~340 rows at SmolLM2's 49k vocabulary) cut the peak of the issue-17 run
# (SmolLM2-135M, 4 x 512 tokens) by ~0.2 GB; the matmuls stay large enough for full CPU speed.
CPU_CHUNK_ELEMENTS = 1 << 24


def cross_entropy_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Reference path: sum of -log softmax(logits)[target] over labeled positions, in fp32.

    logits (..., V) in any float dtype, targets (...) int64 with IGNORE_INDEX for unlabeled ones.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def fused_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 2048,
    softcap: float | None = None,
    logit_scale: float = 1.0,
) -> Tensor:
    """Sum over labeled rows of cross_entropy(cap(logit_scale * (hidden @ weight.T + bias)), targets).

    hidden (N, H), weight (V, H) (the lm_head), bias (V,), targets (N,) with IGNORE_INDEX for
    unlabeled rows; cap(z) = softcap * tanh(z / softcap) when softcap is set (Gemma-2). Returns a
    0-dim fp32 tensor (fp64 for fp64 inputs), differentiable w.r.t. hidden, weight and bias.
    Peak extra memory is about min(chunk_size x V, CHUNK_ELEMENTS) fp32 plus an (N, H) gradient buffer.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, H) and weight (V, H); got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({hidden.shape[0]},); got {tuple(targets.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be (V,) = ({weight.shape[0]},); got {tuple(bias.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap must be > 0 or None; got {softcap}")
    targets = targets.long()
    vocab_size = weight.shape[0]
    # The (C, V) fp32 logits chunk is the peak of the loss: cap it at CHUNK_ELEMENTS whatever the
    # vocabulary, so a 128k-vocab head gets ~500-row chunks and a 2k-vocab one keeps chunk_size.
    budget = CHUNK_ELEMENTS if hidden.device.type != "cpu" else min(CHUNK_ELEMENTS, CPU_CHUNK_ELEMENTS)
    chunk_size = max(1, min(chunk_size, budget // vocab_size))
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))
    if bad.any():
        raise ValueError(
            f"target {targets[bad][0].item()} is outside the vocabulary [0, {vocab_size}) and is not "
            f"IGNORE_INDEX ({IGNORE_INDEX}); check that the tokenizer matches the model's lm_head"
        )

    # Autocast cannot see inside an autograd.Function, so apply its rule for a linear here: cast
    # the floating inputs (fp64 excepted) to the autocast dtype, then run with autocast off.
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        cast = lambda t: t.to(dtype) if t is not None and t.dtype != torch.float64 else t  # noqa: E731
        hidden, weight, bias = cast(hidden), cast(weight), cast(bias)
    if hidden.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise ValueError(
            f"hidden ({hidden.dtype}), weight ({weight.dtype}) and bias must share a dtype; "
            "cast them or run under torch.autocast"
        )
    with torch.autocast(device_type, enabled=False):
        return _FusedLinearCrossEntropy.apply(
            hidden, weight, bias, targets, chunk_size, softcap, logit_scale, torch.is_grad_enabled()
        )


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and every gradient chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, softcap, logit_scale, grad_enabled):
        # needs_input_grad says True under torch.no_grad too; only the caller's grad mode can tell.
        need_hidden, need_weight, need_bias = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        acc_dtype = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64
        device = hidden.device
        loss = torch.zeros((), dtype=acc_dtype, device=device)
        grad_hidden = torch.zeros_like(hidden, memory_format=torch.contiguous_format) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=device) if need_weight else None
        grad_bias = torch.zeros(weight.shape[:1], dtype=acc_dtype, device=device) if need_bias else None

        # Chunk over the labeled rows only: in SFT most rows are masked prompt tokens, and an
        # ignored row contributes neither loss nor gradient, so it never enters a matmul.
        rows = (targets != IGNORE_INDEX).nonzero().squeeze(1)  # (N_labeled,)
        for rows_c in rows.split(chunk_size):
            h = hidden.index_select(0, rows_c)  # (C, H)
            t = targets.index_select(0, rows_c)  # (C,)
            z = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
            z = z.to(acc_dtype)  # (C, V) fp32: with its softmax grad, the peak of this loop
            if logit_scale != 1.0:
                z.mul_(logit_scale)
            if softcap is not None:
                z.div_(softcap).tanh_().mul_(softcap)
            lse = torch.logsumexp(z, dim=-1)  # (C,)
            loss += (lse - z.gather(1, t[:, None]).squeeze(1)).sum()
            if not (need_hidden or need_weight or need_bias):
                continue

            # d loss / d z = softmax(z) - onehot(t); then chain through the cap and the scale.
            grad_z = (z - lse[:, None]).exp_() if softcap is not None else z.sub_(lse[:, None]).exp_()
            grad_z[torch.arange(len(t), device=device), t] -= 1
            if softcap is not None:
                grad_z.mul_(z.div_(softcap).square_().neg_().add_(1))  # d cap / dz = 1 - tanh^2
            del z
            if logit_scale != 1.0:
                grad_z.mul_(logit_scale)

            grad_z_in = grad_z.to(hidden.dtype)  # matmuls run in the input dtype
            if need_hidden:
                grad_hidden.index_copy_(0, rows_c, grad_z_in @ weight)
            if need_weight:
                # fp32 accumulator across chunks; the per-chunk product stays in the input dtype.
                if grad_z_in.dtype == acc_dtype:
                    grad_weight.addmm_(grad_z_in.T, h)
                else:
                    grad_weight.add_(grad_z_in.T @ h)
            if need_bias:
                grad_bias.add_(grad_z.sum(0))

        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad_loss  # noqa: E731
        return scale(grad_hidden), scale(grad_weight), scale(grad_bias), None, None, None, None, None
