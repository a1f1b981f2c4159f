"""PEFT config builders: one function per adapter type, chosen by a registry.

Adapters are PEFT adapters saved in PEFT's own format, so `PeftModel.from_pretrained`, vLLM and
TGI load what we write. Target-module presets are resolved against the model's actual linear
layers, so a preset never silently matches nothing.
"""

from __future__ import annotations

import torch

from .config import AdapterConfig
from .errors import ConfigError

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv", "out_proj", "dense")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc", "c_proj", "w1", "w2", "w3",
             "dense_h_to_4h", "dense_4h_to_h")


def linear_module_names(model) -> set[str]:
    """Leaf names of every linear layer below the LM head (4/8-bit bitsandbytes layers included)."""
    heads = (model.get_output_embeddings(), getattr(model, "score", None))  # LM head; a reward model's scalar head
    names = set()
    for full, mod in model.named_modules():
        if any(mod is h for h in heads if h is not None):
            continue
        if isinstance(mod, torch.nn.Linear) or mod.__class__.__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return names


def resolve_target_modules(model, target: str | list[str]) -> list[str]:
    available = linear_module_names(model)
    if isinstance(target, list):
        missing = [t for t in target if t not in available]
        if missing:
            raise ConfigError(
                f"`adapter.target_modules`: {missing} are not linear layers of this model; it has {sorted(available)} "
                "(or use a preset: all-linear, attention, mlp)"
            )
        return sorted(target)
    presets = {"all-linear": available, "attention": set(ATTENTION_NAMES), "mlp": set(MLP_NAMES)}
    if target not in presets:
        raise ConfigError(f"`adapter.target_modules` = {target!r}: use all-linear, attention, mlp, or a list of module names")
    chosen = sorted(available & presets[target])
    if not chosen:
        raise ConfigError(f"`adapter.target_modules: {target}` matches none of this model's linear layers {sorted(available)}; list them explicitly")
    return chosen


def lora_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=resolve_target_modules(model, cfg.target_modules),
        modules_to_save=cfg.modules_to_save or None,
        bias="none",
        task_type=task_type,
    )


PEFT_BUILDERS = {"lora": lora_config}


def apply_adapter(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with the configured adapter (or return it unchanged for full fine-tuning).
    task_type SEQ_CLS (reward models) makes PEFT train and save the new `score` head in full."""
    if cfg.type == "none":
        return model
    from peft import get_peft_model

    return get_peft_model(model, PEFT_BUILDERS[cfg.type](cfg, model, task_type=task_type))
