"""Trainable-parameter counts of every adapter type in closed form, from the base model's shapes alone.

`tunesmith train` prints this next to the count it measures on the wrapped model, so a mismatch
(a preset matching more modules than meant, a rank pattern that missed) shows at once. Works on a
model built on the meta device, which is how the docs table gets the numbers for a 7B Llama
without a byte of weights. One function per type; the registry names which belongs to which.

Closed forms (d = hidden size, L = layers, kv = key/value width = head_dim · n_kv_heads, n = virtual
tokens, h = encoder hidden size, s = bottleneck size):
  lora     Σ over adapted matrices  r_m · (d_in + d_out)          (Hu et al. 2021, §4.1)
  dora     lora + Σ d_out   (one magnitude per output row)        (Liu et al. 2024, eq. 5)
  ia3      Σ over adapted modules  d_out, or d_in for feedforward  (Liu et al. 2022, §3.3)
  prefix   L · 2 · n · kv   (projection: n·kv + kv·h + h + h·2L·kv + 2L·kv)   (Li & Liang 2021)
  prompt   n · d                                                  (Lester et al. 2021)
  ptuning  n · d + MLP d→h→h→d (with biases), or a 2-layer biLSTM + MLP    (Liu et al. 2021)
  adapter  Σ over insertion points  2 · d · s + s + d              (Houlsby et al. 2019)
plus the full size of every `modules_to_save` module (and a reward model's score head, which trains in full).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config validation may ask the registry, so nothing here imports config at run time
    from ..config import AdapterConfig

from .targets import adapted_linears, pattern_value, resolve_target_modules


@dataclass(frozen=True)
class Dims:
    d: int  # hidden size
    L: int  # decoder layers
    kv: int  # key/value width

    @classmethod
    def of(cls, model) -> Dims:
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return cls(c.hidden_size, c.num_hidden_layers, head_dim * kv_heads)


def modules_to_save_count(model, names: list[str]) -> int:
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


def lora_count(model, cfg: AdapterConfig, dims: Dims, dora: bool = False) -> tuple[int, str]:
    mats = adapted_linears(model, resolve_target_modules(model, cfg.target_modules))
    n = sum(pattern_value(name, cfg.rank_pattern, cfg.r) * (i + o) for name, i, o in mats)
    n += sum(o for _, _, o in mats) if dora else 0
    return n, f"Σ r·(d_in+d_out){' + d_out' if dora else ''} over {len(mats)} matrices"


def dora_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    return lora_count(model, cfg, dims, dora=True)


def ia3_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    targets = resolve_target_modules(model, cfg.target_modules)
    ff = set(targets) & set(resolve_target_modules(model, cfg.ia3.feedforward_modules, "adapter.ia3.feedforward_modules"))
    mods = adapted_linears(model, targets)
    n = sum(i if name.rsplit(".", 1)[-1] in ff else o for name, i, o in mods)
    return n, f"one vector per adapted module ({len(mods)} modules; d_in for {sorted(ff)}, else d_out)"


def prefix_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    nv, h, L, kv = cfg.prefix.num_virtual_tokens, cfg.prefix.encoder_hidden_size, dims.L, dims.kv
    if cfg.prefix.projection:
        n = nv * kv + kv * h + h + h * 2 * L * kv + 2 * L * kv
        return n, f"n·kv + kv·h + h + h·2L·kv + 2L·kv = {nv}·{kv} + {kv}·{h} + {h} + {h}·2·{L}·{kv} + 2·{L}·{kv}"
    return L * 2 * nv * kv, f"L·2·n·kv = {L}·2·{nv}·{kv}"


def prompt_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    return cfg.prompt.num_virtual_tokens * dims.d, f"n·d = {cfg.prompt.num_virtual_tokens}·{dims.d}"


def ptuning_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    nv, h, d = cfg.ptuning.num_virtual_tokens, cfg.ptuning.encoder_hidden_size, dims.d
    if cfg.ptuning.encoder == "mlp":
        n = nv * d + (d * h + h) + (h * h + h) + (h * d + d)
        return n, f"n·d + (d·h+h) + (h·h+h) + (h·d+d) = {nv}·{d} + MLP {d}→{h}→{h}→{d}"
    n = nv * d + _lstm(d, h) + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
    return n, f"n·d + biLSTM({d}→{h}, 2 layers) + MLP {2 * h}→{2 * h}→{d}"


def bottleneck_count(model, cfg: AdapterConfig, dims: Dims) -> tuple[int, str]:
    points, s, d = dims.L * len(cfg.bottleneck.after), cfg.bottleneck.size, dims.d
    return points * (2 * d * s + s + d), f"points·(2·d·s + s + d) = {points}·(2·{d}·{s} + {s} + {d})"
