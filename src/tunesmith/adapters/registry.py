"""One spec per `adapter.type`: what it trains, how it is built, its closed-form count, whether it
merges (and why not), which `adapter.*` options and task types it takes, and how it is saved and
loaded. Every stage (train, merge, eval, score, serving) asks here instead of branching on the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError, UserError
from . import counts, peft_builders

_LORA_OPTIONS = ("r", "alpha", "dropout", "use_rslora", "init", "rank_pattern", "alpha_pattern", "target_modules")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    trains: str  # what the trainable parameters are, in words
    count: Callable  # (base model, AdapterConfig, Dims) -> (count, formula text)
    options: tuple[str, ...]  # the `adapter.*` keys that mean something for this type (besides modules_to_save)
    peft_config: Callable | None = None  # (AdapterConfig, model, task_type) -> PEFT config; None: not a PEFT method
    peft_type: str = ""  # PEFT's `peft_type` in adapter_config.json
    merge_blocker: str = ""  # why the update cannot fold into the base weights; empty: it can
    task_types: tuple[str, ...] = ("CAUSAL_LM", "SEQ_CLS")  # SEQ_CLS: a reward model's scalar head trains too
    quantized: bool = True  # trains on a 4/8-bit bitsandbytes base
    virtual_tokens: bool = False  # prepends learned tokens (no packing, no reward/preference forward)
    weighted_merge: bool = False  # several adapters merge as W0 + Σ w_i·ΔW_i (a scale per adapter is linear)
    per_row_serving: bool = False  # PEFT runs rows of one batch through different adapters (`adapter_names=`)

    @property
    def can_merge(self) -> bool:
        return not self.merge_blocker

    @property
    def is_peft(self) -> bool:
        return self.peft_config is not None


_PROMPT_WHY = "it prepends learned input embeddings, which no weight matrix can express"
SPECS: dict[str, AdapterSpec] = {s.name: s for s in (
    AdapterSpec("lora", "low-rank B·A per adapted matrix", counts.lora_count, _LORA_OPTIONS,
                peft_builders.lora_config, "LORA", weighted_merge=True, per_row_serving=True),
    AdapterSpec("dora", "LoRA + a magnitude vector per adapted matrix", counts.dora_count, _LORA_OPTIONS,
                peft_builders.dora_config, "LORA"),
    AdapterSpec("ia3", "one scaling vector per adapted module", counts.ia3_count, ("target_modules", "ia3"),
                peft_builders.ia3_config, "IA3"),
    AdapterSpec("prefix", "key/value prefixes in every layer", counts.prefix_count, ("prefix",),
                peft_builders.prefix_config, "PREFIX_TUNING",
                merge_blocker="it adds key/value vectors to attention, which no weight matrix can express",
                task_types=("CAUSAL_LM",), virtual_tokens=True),
    AdapterSpec("prompt", "soft-prompt embeddings", counts.prompt_count, ("prompt",),
                peft_builders.prompt_config, "PROMPT_TUNING", merge_blocker=_PROMPT_WHY,
                task_types=("CAUSAL_LM",), virtual_tokens=True),
    AdapterSpec("ptuning", "prompt embeddings + MLP/LSTM prompt encoder", counts.ptuning_count, ("ptuning",),
                peft_builders.ptuning_config, "P_TUNING", merge_blocker=_PROMPT_WHY,
                task_types=("CAUSAL_LM",), virtual_tokens=True),
    AdapterSpec("adapter", "bottleneck MLPs after attention / MLP", counts.bottleneck_count, ("bottleneck",),
                merge_blocker="its bottleneck MLP is a new non-linear block, not a change of an existing weight"),
)}


def get_spec(adapter_type: str) -> AdapterSpec:
    if adapter_type not in SPECS:
        raise ConfigError(f"unknown adapter type {adapter_type!r}; known: {', '.join(SPECS)}")
    return SPECS[adapter_type]


def spec_of_peft(peft_type: str, use_dora: bool = False) -> AdapterSpec | None:
    """The spec PEFT's `peft_type` (+ use_dora) belongs to, or None for a PEFT method tunesmith does not train."""
    if peft_type == "LORA":
        return SPECS["dora" if use_dora else "lora"]
    return next((s for s in SPECS.values() if s.peft_type == peft_type and s.name not in ("lora", "dora")), None)


def allowed_options() -> dict[str, tuple[str, ...]]:
    """`adapter.*` key -> the types it applies to (for config validation); modules_to_save applies to all."""
    out: dict[str, list[str]] = {}
    for s in SPECS.values():
        for key in s.options + ("modules_to_save",):
            out.setdefault(key, []).append(s.name)
    return {k: tuple(v) for k, v in out.items()}


def can_merge(adapter_type: str) -> bool:
    """True when the trained update can be folded into the base weights (LoRA, DoRA, IA3)."""
    return get_spec(adapter_type).can_merge


def require_mergeable(adapter_type: str) -> None:
    spec = get_spec(adapter_type)
    if not spec.can_merge:
        raise UserError(
            f"a `{adapter_type}` adapter cannot be merged into the base model: {spec.merge_blocker}. "
            "Serve or evaluate it as an adapter on top of the base (load_adapter), or train lora/dora/ia3 to merge"
        )


# The old table, for callers that read it (docs, tests): type -> {trains, can_merge, quantized}.
METHODS = {s.name: {"trains": s.trains, "can_merge": s.can_merge, "quantized": s.quantized} for s in SPECS.values()}
