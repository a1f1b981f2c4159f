"""Per-sequence log-probabilities without materialising the (B, T, V) logits.

Preference losses need log π(y|x) summed over each response's tokens. The naive path
(`log_softmax(model(...).logits).gather(...)`) keeps a (T, V) fp32 block per sequence alive for
backward; with a 128k vocabulary and 2 x 1k-token responses that is 1 GiB per pair.
`fused_linear_token_logps` runs the lm_head over row chunks of the *labelled* positions only and
keeps nothing of size V: for a frozen lm_head (LoRA, QLoRA) it computes d logp / d hidden in the
forward pass (softmax - onehot is known as soon as the lse is); when the head itself trains it
recomputes each chunk's logits in backward. Same idea as Liger-Kernel's fused linear losses,
written in plain torch because their kernels need Triton (no CPU) and only ship fixed losses.

`SequenceLogps` is the module the loop wraps for DPO-family and KTO training: packed rows in,
`(sums, counts)` per sequence out. `SequenceScores` is the reward model's: the score head read at
each sequence's last token (PITFALLS 11).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..train import losses
from ..train.forward import base_causal_lm, layout_kwargs, packed_decoder_call
from ..train.segment_attention import segment_attention, segment_layout_for


def fused_linear_token_logps(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
                             chunk_size: int = 1024, entropy_out: Tensor | None = None) -> Tensor:
    """log softmax(hidden @ weight.T + bias)[i, targets[i]] for every row: (N, H), (V, H), (N,) -> (N,) fp32.
    `entropy_out` (N,): filled with each row's entropy (no gradient) from the same chunked logits, so
    online RL logs the policy's entropy without a second pass over the vocabulary projection."""
    if hidden.dim() != 2 or hidden.shape[1] != weight.shape[1] or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden (N, H), weight (V, H), targets (N,); got {tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # autocast cannot see inside an autograd.Function
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device_type, enabled=False):
        # The same logits budget as the SFT loss: a 128k vocabulary gets ~500-row chunks.
        rows = max(1, min(chunk_size, losses.CHUNK_ELEMENTS // weight.shape[0]))
        return _TokenLogps.apply(hidden, weight, bias, targets.long(), rows, torch.is_grad_enabled(), entropy_out)


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    z = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
    return z.float() if z.dtype != torch.float64 else z  # (C, V)


class _TokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, grad_enabled, entropy_out=None):
        need_h, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        out = torch.empty(hidden.shape[0], dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
        # Frozen head: d logp_i / d h_i = (onehot - softmax)_i @ W is known now; keep it (N, H), not the logits.
        dh = torch.empty_like(hidden) if need_h and not (need_w or need_b) else None
        for s in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[s : s + chunk_size], targets[s : s + chunk_size]
            z = _chunk_logits(h, weight, bias)
            lse = torch.logsumexp(z, dim=-1)
            out[s : s + chunk_size] = z.gather(1, t[:, None]).squeeze(1) - lse
            if entropy_out is not None:  # H = lse - sum_v p_v z_v, before z is overwritten below
                entropy_out[s : s + chunk_size] = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
            if dh is not None:
                g = z.sub_(lse[:, None]).exp_().neg_()  # -softmax
                g[torch.arange(len(t), device=g.device), t] += 1
                dh[s : s + chunk_size] = g.to(hidden.dtype) @ weight
        ctx.chunk_size, ctx.mode = chunk_size, "saved" if dh is not None else "recompute" if (need_h or need_w or need_b) else "none"
        if ctx.mode == "saved":
            ctx.save_for_backward(dh)
        elif ctx.mode == "recompute":
            ctx.save_for_backward(hidden, weight, bias, targets)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.mode == "saved":
            (dh,) = ctx.saved_tensors
            return dh * grad_out[:, None].to(dh.dtype), None, None, None, None, None, None
        hidden, weight, bias, targets = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(hidden) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)
        gw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        gb = torch.zeros(weight.shape[:1], dtype=acc, device=weight.device) if need_b else None
        for s in range(0, hidden.shape[0], ctx.chunk_size):
            h, t = hidden[s : s + ctx.chunk_size], targets[s : s + ctx.chunk_size]
            z = _chunk_logits(h, weight, bias)
            g = torch.softmax(z, dim=-1).neg_()
            g[torch.arange(len(t), device=g.device), t] += 1
            g.mul_(grad_out[s : s + ctx.chunk_size, None].to(g.dtype))  # (C, V) d loss / d z
            if need_h:
                gh[s : s + ctx.chunk_size] = g.to(hidden.dtype) @ weight
            if need_w:
                gw.add_(g.T.to(h.dtype) @ h)
            if need_b:
                gb.add_(g.sum(0))
        return (gh, gw.to(weight.dtype) if gw is not None else None, gb.to(bias.dtype) if gb is not None else None,
                None, None, None, None)


def segment_sums(token_logps: Tensor, seq_index: Tensor, n_seqs: int) -> tuple[Tensor, Tensor]:
    """Sum the token log-probs of each sequence: (N,) values with (N,) sequence ids -> (S,), (S,) counts."""
    sums = torch.zeros(n_seqs, dtype=token_logps.dtype, device=token_logps.device).index_add(0, seq_index, token_logps)
    counts = torch.zeros(n_seqs, dtype=token_logps.dtype, device=token_logps.device).index_add(0, seq_index, torch.ones_like(token_logps))
    return sums, counts


class SequenceLogps(nn.Module):
    """A packed batch -> (sum of response-token log-probs, response-token count) per sequence.

    The batch says which hidden row predicts which token (`src` flat row index, `tgt` token id,
    `seq` sequence id; see data/preference_encode.py), so the layout (padding-free rows, shared
    prompts with a 4D mask and their `pair_spans`) is the collator's business."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, input_ids: Tensor, position_ids: Tensor, src: Tensor, tgt: Tensor, seq: Tensor, n_seqs: int,
                attention_mask: Tensor | None = None, pair_spans: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`pair_spans` (n_pairs, 5): the shared-prompt layout behind `attention_mask`, which lets the CPU
        skip the 4D mask (train/segment_attention.py); the mask is what every other path uses."""
        base = base_causal_lm(self.model)
        head = base.get_output_embeddings()
        if self.chunk_size > 0 and type(head) is nn.Linear and not getattr(base.config, "final_logit_softcapping", None):
            hidden = packed_decoder_call(base.get_decoder(), input_ids, position_ids, attention_mask, pair_spans)
            hidden = hidden.flatten(0, 1).index_select(0, src)  # (N, H)
            token_logps = fused_linear_token_logps(hidden, head.weight, tgt, head.bias, self.chunk_size)
        else:  # a LoRA-wrapped / trained-in-full-copy head, or softcapped logits: the plain path
            decoder = base.get_decoder()
            layout = segment_layout_for(decoder, position_ids, pair_spans, attention_mask)
            with segment_attention(decoder, layout):
                logits = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                    attention_mask=attention_mask if layout is None else None, **layout_kwargs(layout)).logits
            logits = logits.flatten(0, 1).index_select(0, src).float()  # (N, V)
            token_logps = logits.log_softmax(-1).gather(1, tgt[:, None]).squeeze(1)
        return segment_sums(token_logps, seq, n_seqs)


def sequence_logps(module, batch: dict) -> tuple[Tensor, Tensor]:
    """Call a SequenceLogps (or its DDP wrapper) on a collated batch."""
    return module(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"], batch["seq"], len(batch["ends"]),
                  batch.get("attention_mask"), batch.get("pair_spans"))


class SequenceScores(nn.Module):
    """Reward model: the scalar head read at each sequence's last token.

    The collator knows where each sequence ends (`ends`, flat indices into the (B, T) rows), so the
    last token is never guessed from pad ids: the
    score does not depend on padding side or amount (PITFALLS 11, transformers #35352)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, position_ids: Tensor, ends: Tensor, attention_mask: Tensor | None = None,
                pair_spans: Tensor | None = None) -> Tensor:
        base = base_causal_lm(self.model)
        backbone = getattr(base, base.base_model_prefix)
        hidden = packed_decoder_call(backbone, input_ids, position_ids, attention_mask, pair_spans)  # (B, T, H)
        picked = hidden.flatten(0, 1).index_select(0, ends)  # (S, H)
        return base.score(picked).squeeze(-1).float()  # (S,)
