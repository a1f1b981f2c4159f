"""Trainable-parameter counts of every adapter type in closed form, from the base model's shapes alone.

`tunesmith train` prints this next to the count it measures on the wrapped model, so a mismatch
(a preset matching more modules than meant, a rank pattern that missed) shows at once. Works on a
model built on the meta device, which is how the docs table gets the numbers for a 7B Llama
without a byte of weights.

Closed forms (d = hidden size, L = layers, kv = key/value width = head_dim · n_kv_heads, n = virtual
tokens, h = encoder hidden size, s = bottleneck size):
  lora     Σ over adapted matrices  r_m · (d_in + d_out)          (Hu et al. 2021, §4.1)
  dora     lora + Σ d_out   (one magnitude per output row)        (Liu et al. 2024, eq. 5)
  ia3      Σ over adapted modules  d_out, or d_in for feedforward  (Liu et al. 2022, §3.3)
  prefix   L · 2 · n · kv   (projection: n·kv + kv·h + h + h·2L·kv + 2L·kv)   (Li & Liang 2021)
  prompt   n · d                                                  (Lester et al. 2021)
  ptuning  n · d + MLP d→h→h→d (with biases), or a 2-layer biLSTM + MLP    (Liu et al. 2021)
  adapter  Σ over insertion points  2 · d · s + s + d              (Houlsby et al. 2019)
plus the full size of every `modules_to_save` module.
"""

from __future__ import annotations

import re

from .adapters import resolve_target_modules
from .config import AdapterConfig


def _linears(model, targets: list[str]) -> list[tuple[str, int, int]]:
    """(full name, d_in, d_out) of every adapted linear layer (bitsandbytes layers included)."""
    out = []
    head = model.get_output_embeddings()
    for name, mod in model.named_modules():
        if mod is head or name.rsplit(".", 1)[-1] not in targets:
            continue
        if hasattr(mod, "in_features") and hasattr(mod, "out_features"):
            out.append((name, mod.in_features, mod.out_features))
    return out


def _pattern_value(name: str, patterns: dict, default):
    # PEFT's rule: the pattern is a regex matched against the end of the module name.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _modules_to_save(model, names: list[str]) -> int:
    total = 0
    for full, mod in model.named_modules():
        if any(full == n or full.endswith("." + n) for n in names):
            total += sum(p.numel() for p in mod.parameters())
    return total


def _lstm(d_in: int, h: int, layers: int = 2) -> int:
    """Bidirectional LSTM: per direction and layer 4h·(input + h) weights + 2 · 4h biases."""
    total, width = 0, d_in
    for _ in range(layers):
        total += 2 * (4 * h * (width + h) + 8 * h)
        width = 2 * h
    return total


def closed_form_trainable(model, cfg: AdapterConfig) -> tuple[int, str]:
    """(count, the formula with its numbers) for the base `model` (not yet wrapped)."""
    c = model.config
    d, L = c.hidden_size, c.num_hidden_layers
    head_dim = getattr(c, "head_dim", None) or d // c.num_attention_heads
    kv = head_dim * (getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
    extra = _modules_to_save(model, cfg.modules_to_save)
    t = cfg.type
    if t in ("lora", "dora"):
        mats = _linears(model, resolve_target_modules(model, cfg.target_modules))
        n = sum(_pattern_value(name, cfg.rank_pattern, cfg.r) * (i + o) for name, i, o in mats)
        n += sum(o for _, _, o in mats) if t == "dora" else 0
        text = f"Σ r·(d_in+d_out){' + d_out' if t == 'dora' else ''} over {len(mats)} matrices"
    elif t == "ia3":
        targets = resolve_target_modules(model, cfg.target_modules)
        ff = cfg.ia3.feedforward_modules
        ff = set(targets) & set(resolve_target_modules(model, ff, "adapter.ia3.feedforward_modules"))
        mods = _linears(model, targets)
        n = sum(i if name.rsplit(".", 1)[-1] in ff else o for name, i, o in mods)
        text = f"one vector per adapted module ({len(mods)} modules; d_in for {sorted(ff)}, else d_out)"
    elif t == "prefix":
        nv, h = cfg.prefix.num_virtual_tokens, cfg.prefix.encoder_hidden_size
        if cfg.prefix.projection:
            n = nv * kv + kv * h + h + h * 2 * L * kv + 2 * L * kv
            text = f"n·kv + kv·h + h + h·2L·kv + 2L·kv = {nv}·{kv} + {kv}·{h} + {h} + {h}·2·{L}·{kv} + 2·{L}·{kv}"
        else:
            n = L * 2 * nv * kv
            text = f"L·2·n·kv = {L}·2·{nv}·{kv}"
    elif t == "prompt":
        n = cfg.prompt.num_virtual_tokens * d
        text = f"n·d = {cfg.prompt.num_virtual_tokens}·{d}"
    elif t == "ptuning":
        nv, h = cfg.ptuning.num_virtual_tokens, cfg.ptuning.encoder_hidden_size
        if cfg.ptuning.encoder == "mlp":
            n = nv * d + (d * h + h) + (h * h + h) + (h * d + d)
            text = f"n·d + (d·h+h) + (h·h+h) + (h·d+d) = {nv}·{d} + MLP {d}→{h}→{h}→{d}"
        else:
            n = nv * d + _lstm(d, h) + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
            text = f"n·d + biLSTM({d}→{h}, 2 layers) + MLP {2 * h}→{2 * h}→{d}"
    elif t == "adapter":
        points = L * len(cfg.bottleneck.after)
        s = cfg.bottleneck.size
        n = points * (2 * d * s + s + d)
        text = f"points·(2·d·s + s + d) = {points}·(2·{d}·{s} + {s} + {d})"
    else:
        raise ValueError(f"no closed form for adapter.type {t!r}")
    if extra:
        text += f" + {extra:,} in modules_to_save"
    return n + extra, text

