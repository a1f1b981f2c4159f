"""Activations saved for backward, per decoder layer, as the forward of a transformers decoder layer
leaves them for autograd. Counted per token, in elements, then scaled by the compute dtype.

The counts were read off autograd itself (a `saved_tensors_hooks` trace of a Llama layer on the
CPU, tests/unit/test_estimate_activations.py re-runs it) rather than copied from a paper, because
what is saved depends on the code: transformers' RMSNorm, RoPE, SDPA call and PEFT's LoRA layer.
Per token and layer (d hidden, kv = key/value width, f intermediate, h heads, r LoRA rank):

  residual stream and norms   x_in, norm1 out, h1 (after attention), norm2 out     4·d
  attention                   q after RoPE, SDPA output, o_proj input (a contiguous copy)
                              3·d, k after RoPE + v: 2·kv (GQA keeps them small), logsumexp h (fp32)
  MLP                         SwiGLU: gate, up, silu(gate), silu·up = 4·f;  GELU MLP: 2·f
  RMSNorm 1/rms               2 values (fp32)
  LoRA                        each adapted matrix's x·A (r values); with dropout > 0 also the
                              dropped-out input of each adapted matrix (d_in values)
  masked attention            packed rows under SDPA/eager get a (B, 1, T, T) mask per layer and lose
                              SDPA's native GQA: k and v are repeated to h heads (+2·(d − kv))
  eager attention             the (B, h, T, T) probabilities: fp32 softmax + its compute-dtype copy

Gradient checkpointing keeps only each layer's input (d per token) and recomputes one layer at a
time during backward, so its peak is L·d + one layer's activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shapes import ModelShape

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ActivationSpec:
    tokens: int  # tokens in one micro-batch (B·T, or the packed DPO row)
    rows: int  # B: rows in the micro-batch (for the (B, 1, T, T) mask)
    seq_len: int  # T of one row
    dtype: str  # compute dtype
    attn: str  # sdpa | eager | flash_attention_2
    masked: bool  # packed rows or shared-prompt DPO rows: attention takes an explicit mask
    checkpointing: bool
    lora_ranks: tuple[tuple[int, int], ...] = ()  # (d_in, r) per adapted matrix in ONE layer
    lora_dropout: float = 0.0
    grad_through_layers: bool = True  # False only when nothing below the head trains (then nothing is saved)


def per_token_layer_elements(shape: ModelShape, spec: ActivationSpec) -> dict[str, float]:
    """Elements saved per token in one decoder layer, by part, in bytes (dtype applied)."""
    a = DTYPE_BYTES[spec.dtype]
    d, kv, f, h = shape.hidden, shape.kv_width, shape.intermediate, shape.heads
    parts = {
        "residual+norms": 4 * d * a + 2 * 4,
        "attention": (3 * d + 2 * kv) * a + h * 4,
        "mlp": (4 if shape.gated_mlp else 2) * f * a,
    }
    if spec.masked and spec.attn != "flash_attention_2" and kv < d:
        parts["attention"] += 2 * (d - kv) * a  # repeat_kv: SDPA's enable_gqa is off when a mask is given
    if spec.attn == "eager":
        parts["attention"] += h * spec.seq_len * (4 + a)
    if spec.lora_ranks:
        parts["lora"] = sum(r for _, r in spec.lora_ranks) * a
        if spec.lora_dropout > 0:
            parts["lora"] += sum(d_in for d_in, _ in spec.lora_ranks) * a
    return parts


def mask_bytes_per_layer(spec: ActivationSpec) -> int:
    """The explicit (B, 1, T, T) attention mask saved by each layer's SDPA/eager call (fp32 as saved)."""
    if not spec.masked or spec.attn == "flash_attention_2":
        return 0
    return spec.rows * spec.seq_len * spec.seq_len * 4


def activation_bytes(shape: ModelShape, spec: ActivationSpec) -> dict[str, int]:
    """{'per_layer': bytes one layer saves for this micro-batch, 'saved': bytes alive at the end of
    the forward, 'detail': text}."""
    if not spec.grad_through_layers:
        return {"per_layer": 0, "saved": 0, "detail": "nothing below the head trains: no activations are saved"}
    a = DTYPE_BYTES[spec.dtype]
    parts = per_token_layer_elements(shape, spec)
    per_layer = int(sum(parts.values()) * spec.tokens) + mask_bytes_per_layer(spec)
    final_norm = 2 * shape.hidden * a * spec.tokens
    if spec.checkpointing:
        saved = shape.layers * shape.hidden * a * spec.tokens + per_layer + final_norm
        how = f"checkpointed: L·d·{a} B/token layer inputs + one recomputed layer ({per_layer / 2**20:.1f} MiB)"
    else:
        saved = shape.layers * per_layer + final_norm
        how = f"{shape.layers} layers × {per_layer / 2**20:.1f} MiB"
    per_tok = ", ".join(f"{k} {v:,.0f}" for k, v in parts.items())
    return {"per_layer": per_layer, "saved": saved,
            "detail": f"{how}; per token per layer (bytes): {per_tok}; {spec.tokens:,} tokens/micro-batch, {spec.attn}"
                      + (", masked (packed) attention" if spec.masked else "")}
