"""Which linear layers an adapter targets: presets resolved against the model's actual layers (so a
preset never silently matches nothing), and the shapes of the layers that are adapted."""

from __future__ import annotations

import re

import torch

from ..errors import ConfigError

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv", "out_proj", "dense")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc", "c_proj", "w1", "w2", "w3",
             "dense_h_to_4h", "dense_4h_to_h")


def _heads(model) -> tuple:
    # The LM head and a reward model's scalar head are never adapted as linear layers.
    return tuple(h for h in (model.get_output_embeddings(), getattr(model, "score", None)) if h is not None)


def linear_module_names(model) -> set[str]:
    """Leaf names of every linear layer below the LM head (4/8-bit bitsandbytes layers included)."""
    heads = _heads(model)
    names = set()
    for full, mod in model.named_modules():
        if any(mod is h for h in heads):
            continue
        if isinstance(mod, torch.nn.Linear) or mod.__class__.__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return names


def resolve_target_modules(model, target: str | list[str], key: str = "adapter.target_modules") -> list[str]:
    available = linear_module_names(model)
    if isinstance(target, list):
        missing = [t for t in target if t not in available]
        if missing:
            raise ConfigError(
                f"`{key}`: {missing} are not linear layers of this model; it has {sorted(available)} "
                "(or use a preset: all-linear, attention, mlp)"
            )
        return sorted(target)
    presets = {"all-linear": available, "attention": set(ATTENTION_NAMES), "mlp": set(MLP_NAMES)}
    if target not in presets:
        raise ConfigError(f"`{key}` = {target!r}: use all-linear, attention, mlp, or a list of module names")
    chosen = sorted(available & presets[target])
    if not chosen:
        raise ConfigError(f"`{key}: {target}` matches none of this model's linear layers {sorted(available)}; list them explicitly")
    return chosen


def adapted_linears(model, targets: list[str]) -> list[tuple[str, int, int]]:
    """(full name, d_in, d_out) of every adapted linear layer (bitsandbytes layers included)."""
    heads = _heads(model)
    out = []
    for name, mod in model.named_modules():
        if any(mod is h for h in heads) or name.rsplit(".", 1)[-1] not in targets:
            continue
        if hasattr(mod, "in_features") and hasattr(mod, "out_features"):
            out.append((name, mod.in_features, mod.out_features))
    return out


def pattern_value(name: str, patterns: dict, default):
    """PEFT's rule for rank_pattern / alpha_pattern: the key is a regex matched against the end of the name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def rank_warnings(mats: list[tuple[str, int, int]], r: int, rank_pattern: dict) -> list[str]:
    """A warning per rank above a matrix's smaller dimension: B·A has rank min(d_in, d_out) at most, so
    the extra rank adds parameters but no directions (a warning, not an error: it still trains, and
    the quickstart's r = hidden size deliberately exceeds the narrower k/v projections)."""
    over: dict[int, list[tuple[str, int, int]]] = {}
    for name, d_in, d_out in mats:
        rank = pattern_value(name, rank_pattern, r)
        if rank > min(d_in, d_out):
            over.setdefault(rank, []).append((name, d_in, d_out))
    out = []
    for rank, hits in over.items():
        name, d_in, d_out = hits[0]
        key = "adapter.r" if rank == r else "adapter.rank_pattern"
        more = f" and {len(hits) - 1} more layer(s)" if len(hits) > 1 else ""
        out.append(f"warning: `{key}` = {rank} is larger than layer {name} ({d_in} -> {d_out}){more}: its update B·A "
                   f"has rank {min(d_in, d_out)} at most, so the extra rank adds parameters, not capacity; lower "
                   f"`{key}` or give such layers a smaller rank with `adapter.rank_pattern`")
    return out
