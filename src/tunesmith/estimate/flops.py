"""Time per optimizer step from FLOPs: forward, backward and recomputation, at a stated utilisation.

Per token, forward: 2 FLOPs per matmul parameter (decoder linears + LM head) plus attention,
QK^T and AV: 2 · 2 · (h · head_dim) · context per layer, where context is T/2 for causal rows
(T with an explicit mask: the CPU kernel cannot skip masked blocks; on the CPU, packed rows attend per
example, at most T/2, and a DPO pair within its own prompt + responses, at most seq_len).
Backward: input gradients cost one forward again; weight gradients a second one, but only for
trainable matrices, so a frozen base (LoRA/QLoRA) costs 2× forward + 6 FLOPs per adapter
parameter instead of full fine-tuning's 3× forward (Kaplan et al. 2020: 6 · N per token).
Gradient checkpointing adds one more forward; a DPO/KTO reference adds one no-grad forward.
"""

from __future__ import annotations

from .plan import Plan
from .shapes import ModelShape


def flops_per_micro_batch(shape: ModelShape, plan: Plan, trainable: int) -> dict[str, float]:
    tokens = plan.tokens_per_micro_batch()
    T = tokens if plan.method in ("dpo", "reward") else plan.seq_len
    context = T if plan.masked_attention() else plan.seq_len if plan.segment_attention() and T != plan.seq_len else T / 2
    attn = 4 * shape.heads * shape.head_dim * context * shape.layers
    forward = tokens * (2 * shape.matmul_params + attn)
    if plan.full:
        backward = 2 * forward
    else:
        backward = forward + tokens * 6 * trainable
    recompute = forward if plan.checkpointing else 0.0
    reference = forward if plan.reference in ("adapter_disabled", "frozen_copy") else 0.0
    return {"forward": forward, "backward": backward, "recompute": recompute, "reference": reference,
            "total": forward + backward + recompute + reference}
