"""Attention for packed rows on the CPU that computes only what each token may see, with no (T, T) mask.

A packed row is a tiling of [0, T) into blocks. A causal block (SFT examples, KTO sequences, the
[prompt | chosen] part of a DPO pair) attends causally within itself; a branch block (a DPO pair's
rejected response) sees a prefix elsewhere in the row (its prompt) and itself causally. Each block
is one call of torch's CPU flash-attention kernel: causal for a causal block, and for a branch block
keys [prefix, block] with a bottom-right causal additive mask of (n, P + n) only.

Why per-block calls and not one masked call: torch's CPU flash kernel computes every (T, T) score
block the mask covers (it cannot skip masked blocks), while `is_causal` stops each query block at
its own position, so a row of segments of lengths l_i costs sum(l_i^2)/2 instead of T^2. Measured
(fwd + bwd, one SmolLM2 layer, 4 rows x 512 tokens of 3 segments, 1 thread): masked 120 ms, per
segment 49 ms, all segments padded to one batched causal call 83 ms. torch 2.13's
`torch.nn.attention.varlen` has no CPU kernel. k/v keep their own head count (GQA), so nothing
repeated is saved for backward, no mask is saved for SFT rows, and one autograd Function writes
every block into the single output o_proj reads (`_BlockAttention`): packed rows save exactly what
unpacked rows save. Many small calls cost OpenMP barriers at > 1 thread (each block is its own
parallel region): on a loaded machine with active OMP waiting that shows as CPU time.

How it is selected without touching the model for anyone else: the attention function is
registered in transformers under its own name; around a training forward, `segment_attention`
points the decoder's config at it and puts the previous value back, and the layout travels as a
keyword argument of the decoder call, which transformers hands to every attention call. Called
without a layout, the function is transformers' sdpa unchanged. Gradient checkpointing recomputes
the layers in backward, after the context has ended: `CHECKPOINT_KWARGS` carries a `context_fn`
that re-enters the same switch for the recomputation; a decoder checkpointed without it keeps
today's masked path (train/packed_mask.py), as do eager, flash-attention, GPUs and models whose
attention has a sliding window or soft-capping.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .packed_mask import segment_ids

ATTN_NAME = "tunesmith_segments"
_state = threading.local()  # the configs switched by the innermost running forward, for checkpoint_contexts


class SegmentLayout:
    """Per row, the blocks (start, end, prefix_start, prefix_end) tiling [0, T) in order; a causal
    block has an empty prefix. Built on the host once per forward (one sync), read by every layer."""

    def __init__(self, rows: list[list[tuple[int, int, int, int]]], T: int):
        for r, blocks in enumerate(rows):
            ends = [0] + [e for _, e, _, _ in blocks]
            if [s for s, _, _, _ in blocks] != ends[:-1] or ends[-1] != T or any(e <= s for s, e, _, _ in blocks):
                raise ValueError(f"row {r}: blocks {blocks} do not tile [0, {T})")
            if any(p1 > s or p0 > p1 for s, _, p0, p1 in blocks):
                raise ValueError(f"row {r}: a block's prefix must lie before it: {blocks}")
        self.rows, self.T = rows, T
        self._masks: dict = {}  # (P, n, dtype, device) -> (n, P + n) additive mask, shared by all layers

    @classmethod
    def from_position_ids(cls, position_ids: torch.Tensor) -> "SegmentLayout":
        """Independent causal segments where the positions restart (transformers' packed-row rule)."""
        T = position_ids.shape[1]
        change = torch.diff(segment_ids(position_ids), dim=1) != 0  # (B, T - 1): a segment starts at t + 1
        rows = []
        for r in change.cpu():
            cuts = [0] + (r.nonzero().squeeze(1) + 1).tolist() + [T]
            rows.append([(a, b, a, a) for a, b in zip(cuts, cuts[1:])])
        return cls(rows, T)

    @classmethod
    def from_blocks(cls, blocks: torch.Tensor, n_rows: int, T: int) -> "SegmentLayout":
        """Explicit blocks (n, 5) = (row, start, end, prefix_start, prefix_end), as a collator writes them
        (RL groups: [prompt | c1] causal, each later completion a branch of the prompt); what they leave
        uncovered between or after them (padding) becomes causal blocks of its own."""
        rows: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_rows)]
        for row, s, e, p0, p1 in sorted(blocks.tolist()):
            if e <= s:
                continue  # an empty completion or response is no block (not an error)
            end = rows[row][-1][1] if rows[row] else 0
            if s > end:
                rows[row].append((end, s, end, end))
            rows[row].append((s, e, p0, p1))
        for blocks_ in rows:
            end = blocks_[-1][1] if blocks_ else 0
            if end < T:
                blocks_.append((end, T, end, end))
        return cls(rows, T)

    @classmethod
    def from_pair_spans(cls, spans: torch.Tensor, n_rows: int, T: int) -> "SegmentLayout":
        """DPO shared-prompt rows: spans (n_pairs, 5) = (row, offset, P, C, R) as written by
        `pack_shared_prompt`: [prompt | chosen] causal, rejected a branch of the prompt."""
        blocks = [(row, o, o + P + C, o, o) for row, o, P, C, R in spans.tolist()]
        blocks += [(row, o + P + C, o + P + C + R, o, o + P) for row, o, P, C, R in spans.tolist()]
        return cls.from_blocks(torch.tensor(blocks, dtype=torch.long).view(-1, 5), n_rows, T)

    def branch_mask(self, P: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(n, P + n) additive: every prefix key, and the block's own keys up to the query (causal
        aligned bottom-right)."""
        key = (P, n, dtype, device)
        if key not in self._masks:
            m = torch.zeros(n, P + n, dtype=dtype, device=device)
            m[:, P:] = torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu_(1)
            self._masks[key] = m
        return self._masks[key]


def segment_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                              is_causal=None, segment_layout: SegmentLayout | None = None, **kwargs):
    """transformers' attention-function contract: query (B, H, T, D), key/value (B, KV, T, D) ->
    ((B, T, H, D), None). Without a layout: transformers' sdpa, unchanged."""
    if segment_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    unsupported = [k for k in ("position_bias", "softcap", "sliding_window") if kwargs.get(k) is not None]
    if attention_mask is not None or unsupported or is_causal is False or query.shape[2] != segment_layout.T:
        raise RuntimeError(f"segment attention got an input it does not handle (mask={attention_mask is not None}, "
                           f"{unsupported}, is_causal={is_causal}, T={query.shape[2]}); `segment_layout_for` should have refused")
    if dropout == 0.0 and query.device.type == "cpu":
        if torch.is_autocast_enabled("cpu"):  # what autocast does to F.sdpa's inputs (RoPE leaves q, k in fp32)
            dtype = torch.get_autocast_dtype("cpu")
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        return _BlockAttention.apply(query, key, value, segment_layout, scaling), None
    return _per_block_sdpa(query, key, value, segment_layout, dropout, scaling), None


def _blocks(layout: SegmentLayout, query, key, value):
    """Per block: (row, start, end, q (1, H, n, D), k, v (1, KV, P + n, D), mask or None), all views
    but a branch block's k/v, which put its prefix first."""
    for b, blocks in enumerate(layout.rows):
        for s, e, p0, p1 in blocks:
            q, k, v, mask = query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e], None
            if p1 > p0:
                k, v = torch.cat([key[b:b + 1, :, p0:p1], k], 2), torch.cat([value[b:b + 1, :, p0:p1], v], 2)
                mask = layout.branch_mask(p1 - p0, e - s, query.dtype, query.device)
            yield b, s, e, p0, p1, q, k, v, mask


class _BlockAttention(torch.autograd.Function):
    """Every block through torch's CPU flash kernel, written into one (B, T, H, D) output. Why not F.sdpa per
    block and a cat: each call's output would be saved for backward beside the concatenated copy that o_proj
    reads (one more (T, H, D) per layer); here the output o_proj reads is the one saved. The kernel takes
    k/v at their own head count (GQA) as F.sdpa's `enable_gqa` does."""

    @staticmethod
    def forward(ctx, query, key, value, layout: SegmentLayout, scale):
        B, H, T, D = query.shape
        out = query.new_empty(B, T, H, D)
        lse = []
        for b, s, e, _, _, q, k, v, mask in _blocks(layout, query, key, value):
            o, l = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, mask is None, attn_mask=mask,
                                                                                scale=scale)
            out[b, s:e] = o[0].transpose(0, 1)
            lse.append(l)
        ctx.layout, ctx.scale = layout, scale
        ctx.save_for_backward(query, key, value, out, *lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, out, *lse = ctx.saved_tensors
        gq = torch.empty_like(out).transpose(1, 2)  # (B, H, T, D): every block writes its rows
        gk, gv = torch.zeros_like(key), torch.zeros_like(value)
        for (b, s, e, p0, p1, q, k, v, mask), l in zip(_blocks(ctx.layout, query, key, value), lse):
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad_out[b:b + 1, s:e].transpose(1, 2), q, k, v, out[b:b + 1, s:e].transpose(1, 2), l, 0.0, mask is None,
                attn_mask=mask, scale=ctx.scale)
            gq[b, :, s:e] = dq[0]
            P = p1 - p0
            gk[b, :, s:e] += dk[0, :, P:]
            gv[b, :, s:e] += dv[0, :, P:]
            if P:
                gk[b, :, p0:p1] += dk[0, :, :P]
                gv[b, :, p0:p1] += dv[0, :, :P]
        return gq, gk, gv, None, None


def _per_block_sdpa(query, key, value, layout: SegmentLayout, dropout: float, scaling):
    """With attention dropout (or off the CPU): F.sdpa per block and one cat, which autograd differentiates."""
    gqa = key.shape[1] != query.shape[1]
    pieces = [F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
                                             scale=scaling, enable_gqa=gqa).transpose(1, 2)  # (1, n, H, D)
              for _, _, _, _, _, q, k, v, mask in _blocks(layout, query, key, value)]
    B, H, T, D = query.shape
    return torch.cat(pieces, 1).view(B, T, H, D)


AttentionInterface.register(ATTN_NAME, segment_attention_forward)


def _checkpointed(decoder) -> list:
    return [m for m in decoder.modules() if getattr(m, "gradient_checkpointing", False) is True]


def applies(decoder, device_type: str) -> bool:
    """Whether `decoder`'s attention can take a segment layout on this device: sdpa on the CPU, plain
    causal attention (no sliding window, no soft-capping), and under gradient checkpointing only with
    CHECKPOINT_KWARGS (which re-enters the switch for the recomputation)."""
    cfg = getattr(decoder, "config", None)
    if device_type != "cpu" or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    sliding = getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True)
    if sliding or "sliding_attention" in (getattr(cfg, "layer_types", None) or []) \
            or getattr(cfg, "attn_logit_softcapping", None):
        return False
    return all(getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", {}).get("context_fn")
               is checkpoint_contexts for m in _checkpointed(decoder))


def segment_layout_for(decoder, position_ids: torch.Tensor | None, pair_spans: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, blocks: torch.Tensor | None = None) -> SegmentLayout | None:
    """The layout to pass as `segment_layout=` to `decoder`, or None for today's path (see `applies`),
    and for rows that hold one sequence each. A caller's own `attention_mask` is used as it is unless
    `pair_spans` (DPO) or `blocks` (RL groups) describes it."""
    if attention_mask is not None and pair_spans is None and blocks is None:
        return None
    if position_ids is None or position_ids.dim() != 2 or not applies(decoder, position_ids.device.type):
        return None
    B, T = position_ids.shape
    if blocks is not None:
        return SegmentLayout.from_blocks(blocks, B, T)
    if pair_spans is not None:
        return SegmentLayout.from_pair_spans(pair_spans, B, T)
    if T < 2 or not bool((segment_ids(position_ids)[:, -1] != 0).any()):
        return None  # single sequences: plain causal sdpa already does only the useful work
    return SegmentLayout.from_position_ids(position_ids)


@contextlib.contextmanager
def _switched(configs: list):
    previous = [c._attn_implementation for c in configs]
    for c in configs:
        c._attn_implementation = ATTN_NAME
    try:
        yield
    finally:
        for c, p in zip(configs, previous):
            c._attn_implementation = p


@contextlib.contextmanager
def segment_attention(decoder, layout: SegmentLayout | None):
    """Around one decoder call given `segment_layout=layout`: its attention layers use the segment
    function, and the config is put back afterwards (also on error). A no-op for layout None."""
    if layout is None:
        yield
        return
    configs = [decoder.config]
    outer = getattr(_state, "configs", None)
    _state.configs = configs
    try:
        with _switched(configs):
            yield
    finally:
        _state.configs = outer


def checkpoint_contexts():
    """`context_fn` of torch.utils.checkpoint: called when a checkpointed layer runs forward; the
    recomputation in backward re-enters the attention switch that was active at that moment."""
    configs = getattr(_state, "configs", None)
    return contextlib.nullcontext(), (_switched(configs) if configs else contextlib.nullcontext())


# What train/run.py passes to `gradient_checkpointing_enable` (reentrant checkpointing leaves LoRA B
# at zero, PITFALLS 14).
CHECKPOINT_KWARGS = {"use_reentrant": False, "context_fn": checkpoint_contexts}
