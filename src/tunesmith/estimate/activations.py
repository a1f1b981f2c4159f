"""Activations saved for backward, per decoder layer, as the forward of a transformers decoder layer
leaves them for autograd. Counted per token, in elements, then scaled by the compute dtype.

The counts were read off autograd itself (a `saved_tensors_hooks` trace of a Llama layer on the
CPU; tests/unit/test_estimate_activations.py re-runs it and holds the formula to it) rather than
copied from a paper, because what is saved depends on the code: transformers' RMSNorm, RoPE and
SDPA call, and PEFT's LoRA layer. Per token and layer (d hidden, kv = key/value width, f
intermediate, h heads, r LoRA rank):

  always (gradients flow through the layer)
    residual stream x_in and h1 (after attention)                       2·d
    q after RoPE and the SDPA output; k after RoPE and v (GQA: kv wide)  2·d + 2·kv
    SDPA's logsumexp (fp32) and RMSNorm's 1/rms (fp32, two norms)       h + 2
    SwiGLU: gate, up, silu(gate)                                         3·f   (GELU MLP: f)
  the input of a linear layer whose weight trains is saved once per input:
    norm1 out (q/k/v), o_proj input, norm2 out (gate/up), silu·up (down)  d, d, d, f
    full fine-tuning saves all four (7·d + 2·kv + 4·f + h + 2 in all); LoRA without dropout saves
    those of its adapted groups except the o_proj input, which PEFT's LoRA reads without keeping
  LoRA: each adapted matrix keeps x·A (r values); with dropout > 0 each adapted matrix keeps its
    own dropped-out input and the dropout mask (2·d_in, in place of the shared input above)
  masked attention: packed rows under SDPA/eager get a (B, 1, T, T) fp32 mask per layer and lose
    SDPA's native GQA: k and v are repeated to h heads (+2·(d − kv)); tunesmith on the CPU under
    SDPA attends per example instead (train/segment_attention.py): no mask, k/v at kv width, the
    unmasked count exactly (traced)
  eager attention: the (B, h, T, T) probabilities, fp32 softmax + its compute-dtype copy

Outside the layers (traced, per token): +6·d with full fine-tuning (embedding output, final norm);
with a frozen embedding the first layer saves less than the others (net 0·d, or −3·d with LoRA
dropout); RoPE's cos/sin (2·head_dim, fp32) and the position ids.
Gradient checkpointing keeps only each layer's input (d per token) and recomputes one layer at a
time during backward, so its peak is L·d + one layer's activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shapes import ModelShape

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


# Which input tensor each linear reads: matrices of one group share it (saved once).
_GROUPS = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in", "query_key_value": "attn_in",
           "c_attn": "attn_in", "Wqkv": "attn_in", "o_proj": "attn_out", "out_proj": "attn_out", "dense": "attn_out",
           "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in", "w1": "mlp_in", "w3": "mlp_in", "fc1": "mlp_in",
           "c_fc": "mlp_in", "dense_h_to_4h": "mlp_in", "down_proj": "mlp_out", "w2": "mlp_out", "fc2": "mlp_out",
           "dense_4h_to_h": "mlp_out", "c_proj": "mlp_out"}


@dataclass(frozen=True)
class ActivationSpec:
    tokens: int  # tokens in one micro-batch (B·T, or the packed DPO row)
    rows: int  # B: rows in the micro-batch (for the (B, 1, T, T) mask)
    seq_len: int  # T of one row
    dtype: str  # compute dtype
    attn: str  # sdpa | eager | flash_attention_2
    masked: bool  # packed rows or shared-prompt DPO rows take an explicit mask (not on the CPU: Plan.masked_attention)
    checkpointing: bool
    full: bool = True  # every weight trains (full fine-tuning)
    lora: tuple[tuple[str, int, int], ...] = ()  # (leaf name, d_in, r) of each adapted matrix in ONE layer
    lora_dropout: float = 0.0


def per_token_layer_elements(shape: ModelShape, spec: ActivationSpec) -> dict[str, float]:
    """Bytes saved per token in one decoder layer, by part."""
    a = DTYPE_BYTES[spec.dtype]
    d, kv, f, h = shape.hidden, shape.kv_width, shape.intermediate, shape.heads
    widths = {"attn_in": d, "attn_out": d, "mlp_in": d, "mlp_out": f}
    if spec.full:
        inputs = set(widths)
    elif spec.lora_dropout > 0:
        inputs = set()
    else:
        inputs = {_GROUPS.get(n, "attn_in") for n, _, _ in spec.lora} - {"attn_out"}
    parts = {
        "residual": 2 * d * a,
        "attention": (2 * d + 2 * kv) * a + (h + 2) * 4,
        "mlp": (3 if shape.gated_mlp else 1) * f * a,
        "linear inputs": sum(widths[g] for g in inputs) * a,
    }
    if spec.masked and spec.attn != "flash_attention_2" and kv < d:
        parts["attention"] += 2 * (d - kv) * a  # repeat_kv: SDPA's enable_gqa is off when a mask is given
    if spec.attn == "eager":
        parts["attention"] += h * spec.seq_len * (4 + a)
    if spec.lora:
        parts["lora"] = sum(r for _, _, r in spec.lora) * a
        if spec.lora_dropout > 0:
            parts["lora"] += 2 * sum(d_in for _, d_in, _ in spec.lora) * a
    return parts


def mask_bytes_per_layer(spec: ActivationSpec) -> int:
    """The explicit (B, 1, T, T) attention mask saved by each layer's SDPA/eager call (fp32 as saved)."""
    if not spec.masked or spec.attn == "flash_attention_2":
        return 0
    return spec.rows * spec.seq_len * spec.seq_len * 4


def activation_bytes(shape: ModelShape, spec: ActivationSpec) -> dict[str, int]:
    """{'per_layer': bytes one layer saves for this micro-batch, 'saved': bytes alive at the end of
    the forward, 'detail': text}."""
    a = DTYPE_BYTES[spec.dtype]
    parts = per_token_layer_elements(shape, spec)
    per_layer = int(sum(parts.values()) * spec.tokens) + mask_bytes_per_layer(spec)
    # Outside the layers (traced): full fine-tuning saves 6·d more (embedding output, final norm);
    # with a frozen embedding the first layer saves less than the others: 0·d net without LoRA
    # dropout, 3·d fewer with it.
    outside_d = 6 if spec.full else (-3 if spec.lora and spec.lora_dropout > 0 else 0)
    outside = (outside_d * shape.hidden * a + 2 * shape.head_dim * 4 + 8) * spec.tokens
    if spec.checkpointing:
        saved = shape.layers * shape.hidden * a * spec.tokens + per_layer + outside
        how = f"checkpointed: L·d·{a} B/token layer inputs + one recomputed layer ({per_layer / 2**20:.1f} MiB)"
    else:
        saved = shape.layers * per_layer + outside
        how = f"{shape.layers} layers × {per_layer / 2**20:.1f} MiB"
    per_tok = ", ".join(f"{k} {v:,.0f}" for k, v in parts.items())
    return {"per_layer": per_layer, "saved": saved,
            "detail": f"{how}; per token per layer (bytes): {per_tok}; {spec.tokens:,} tokens/micro-batch, {spec.attn}"
                      + (", masked (packed) attention" if spec.masked else "")}
