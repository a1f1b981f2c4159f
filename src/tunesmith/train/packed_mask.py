"""One block-diagonal causal mask per forward for packed rows under sdpa, shared by every layer.

The fallback path: on the CPU under sdpa packed rows need no mask at all (train/segment_attention.py:
one causal attention call per example, sum(l_i^2)/2 work instead of T^2). This mask is what they use
where that does not apply: GPUs, a decoder checkpointed without `segment_attention.CHECKPOINT_KWARGS`,
models with a sliding window or soft-capped attention.

Left to itself, transformers derives a boolean (B, 1, T, T) mask from the restarting position_ids
(PITFALLS 2), and torch's sdpa converts a boolean mask into a new additive float mask at every
call, which autograd then saves: one (B, 1, T, T) fp32 copy per layer (30 x 4 MiB = 120 MiB at
4 x 512 tokens on SmolLM2). An additive mask built once in the query dtype goes to sdpa as it is,
so all layers save the same tensor. The mask is the same function of position_ids: a token sees
the tokens of its own segment up to itself (-inf elsewhere, as torch's own conversion writes).

With a mask, transformers also repeats k and v to all query heads before sdpa (GQA: SmolLM2 has
3 kv heads for 9 query heads), and autograd saves the repeated copies: 2 x 4.5 MiB a layer at
4 x 512 tokens. torch's CPU flash kernel takes grouped k/v and a mask natively (`enable_gqa`), so
on the CPU, where that is checked to hold, `grouped_kv_attention` asks transformers for it.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F

# transformers' switch for `enable_gqa=True` in sdpa even with a mask (integrations/sdpa_attention.py,
# `use_gqa_in_sdpa`); without it a masked call repeats k and v to every query head first.
FORCE_GQA_ENV = "TRANSFORMERS_SDPA_FORCE_GQA"


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) index of each token's segment in its row: a new segment starts wherever the position
    does not follow the previous one by 1 (transformers' `find_packed_sequence_indices` rule)."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def packed_additive_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, 1, T, T) additive mask (0 = attend, -inf = not) when some row holds more than one
    segment; None when every row is a single sequence (plain causal attention needs no mask)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return None
    seg = segment_ids(position_ids)
    if not bool((seg[:, -1] != 0).any()):
        return None
    T = position_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril_()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal  # (B, T, T)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill_(~allowed, float("-inf"))[:, None]


def shared_mask_for(model, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The mask to pass as `attention_mask` to a decoder, or None to let transformers decide: only
    for the sdpa implementation (flash-attention reads the position_ids itself, and eager wants
    finite masks), and only outside autocast, where the query dtype is known to be `dtype`."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return None
    if torch.is_autocast_enabled(position_ids.device.type):
        return None
    return packed_additive_mask(position_ids, dtype)


@functools.cache
def _cpu_flash_takes_gqa_with_mask() -> bool:
    """torch's CPU flash-attention kernel accepts grouped k/v with a mask (no fallback to the math
    path, which would materialise (B, H, T, T) scores): checked once on a tiny input."""
    try:
        q = torch.zeros(1, 2, 4, 8, requires_grad=True)
        kv = torch.zeros(1, 1, 4, 8)
        out = F.scaled_dot_product_attention(q, kv, kv, attn_mask=torch.zeros(1, 1, 4, 4), enable_gqa=True)
    except (TypeError, RuntimeError):
        return False
    return "FlashAttentionForCpu" in type(out.grad_fn).__name__


def _checkpointed(decoder) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in decoder.modules())


@contextlib.contextmanager
def grouped_kv_attention(mask: torch.Tensor | None, decoder):
    """Around a decoder call: let masked sdpa take k/v at their own head count on the CPU. Not under
    gradient checkpointing: its recomputation runs in backward, outside this context, and would
    rebuild repeated k/v whose shapes differ from the saved ones (a CheckpointError)."""
    if mask is None or mask.device.type != "cpu" or FORCE_GQA_ENV in os.environ or _checkpointed(decoder) \
            or not _cpu_flash_takes_gqa_with_mask():
        yield
        return
    os.environ[FORCE_GQA_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(FORCE_GQA_ENV, None)
