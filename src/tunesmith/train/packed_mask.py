"""One block-diagonal causal mask per forward for packed rows under sdpa, shared by every layer.

Left to itself, transformers derives a boolean (B, 1, T, T) mask from the restarting position_ids
(PITFALLS 2), and torch's sdpa converts a boolean mask into a new additive float mask at every
call, which autograd then saves: one (B, 1, T, T) fp32 copy per layer (30 x 4 MiB = 120 MiB at
4 x 512 tokens on SmolLM2). An additive mask built once in the query dtype goes to sdpa as it is,
so all layers save the same tensor. The mask is the same function of position_ids: a token sees
the tokens of its own segment up to itself (-inf elsewhere, as torch's own conversion writes).
"""

from __future__ import annotations

import torch


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
