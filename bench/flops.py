"""Training FLOPs per token of a Llama-style decoder, for the "fraction of the matmul bound" column.

Counted (multiply-add = 2 FLOPs), per token, for the work the loss needs:

    linear   full fine-tuning: 6 N           (forward 2N, input-grad 2N, weight-grad 2N)
             LoRA / QLoRA:     4 N + 6 N_lora (the frozen N get no weight gradient)
    attention                  6 c D L        (per layer: QK^T and AV forward, causal = half of 2 x 2 c D each,
                                               backward twice the forward)
    LM head                    h V (4 or 6) f (only label tokens meet it: f = labels / tokens; 6 when the
                                               head/embedding trains: full fine-tuning)

N = L x (h·D + 2·h·D_kv + D·h + 3·h·I), the decoder's linear weights (q, k, v, o, gate, up, down);
N_lora = L x r x Σ(d_in + d_out) over those 7 matrices; D = H_q·d (query width), D_kv = H_kv·d; c = the
mean attention context per token = Σ len_i² / Σ len_i over the examples (a packed row attends only within
each example, causal; padding is not work). Not counted: norms, activations, softmax, the optimizer,
4-bit dequantization (not matmul FLOPs). fraction = FLOPs/token x tokens/s / (bound GFLOP/s x 1e9).
"""

from __future__ import annotations

import json
from pathlib import Path

METHODS = ("lora", "qlora", "full")


def shape_of(config: dict) -> dict:
    """The numbers the formula needs, from a transformers Llama-style config.json."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    d = config.get("head_dim") or h // heads
    return {"h": h, "I": config["intermediate_size"], "layers": config["num_hidden_layers"], "heads": heads,
            "kv_heads": config.get("num_key_value_heads") or heads, "head_dim": d, "vocab": config["vocab_size"]}


def load_shape(model_dir: str | Path) -> dict:
    return shape_of(json.loads((Path(model_dir) / "config.json").read_text()))


def linear_params(s: dict) -> int:
    dq, dkv = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    return s["layers"] * (s["h"] * dq + 2 * s["h"] * dkv + dq * s["h"] + 3 * s["h"] * s["I"])


def lora_params(s: dict, r: int) -> int:
    dq, dkv, h, i = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"], s["h"], s["I"]
    per_layer = (h + dq) + 2 * (h + dkv) + (dq + h) + 2 * (h + i) + (i + h)
    return s["layers"] * r * per_layer


def flops_per_token(s: dict, method: str, context: float, label_fraction: float, lora_r: int = 16) -> dict:
    """Training FLOPs per (non-pad) token, itemised; `context` = Σ len² / Σ len of the examples."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = linear_params(s)
    linear = 6 * n if method == "full" else 4 * n + 6 * lora_params(s, lora_r)
    attention = 6 * context * s["heads"] * s["head_dim"] * s["layers"]
    head = (6 if method == "full" else 4) * s["h"] * s["vocab"] * label_fraction
    return {"linear": linear, "attention": attention, "head": head, "total": linear + attention + head}


def bound_fraction(flops_token: float, tokens_per_s: float, bound_gflops: float) -> float:
    return flops_token * tokens_per_s / (bound_gflops * 1e9)


def context_of(lengths: list[int]) -> float:
    """Mean attention context per token of examples with these lengths (each attends causally within itself)."""
    return sum(x * x for x in lengths) / sum(lengths)
