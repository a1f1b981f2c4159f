"""PEFT config builders: one function per adapter type, chosen by a registry, plus what every stage
needs to know about a method (can it merge, does it work on a quantized base) and save/load.

Adapters are PEFT adapters saved in PEFT's own format, so `PeftModel.from_pretrained`, vLLM and
TGI load what we write. The one method PEFT does not have, Houlsby bottleneck adapters, lives in
`bottleneck.py` and saves into the same `adapter/` directory layout. Target-module presets are
resolved against the model's actual linear layers, so a preset never silently matches nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import AdapterConfig
from .errors import ConfigError, UserError

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv", "out_proj", "dense")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc", "c_proj", "w1", "w2", "w3",
             "dense_h_to_4h", "dense_4h_to_h")

# What each method trains, whether its update folds into the base weights, whether it trains on a
# 4/8-bit base. The merge stage (and anyone else) asks `can_merge` / `require_mergeable`.
METHODS = {
    "lora": {"trains": "low-rank B·A per adapted matrix", "can_merge": True, "quantized": True},
    "dora": {"trains": "LoRA + a magnitude vector per adapted matrix", "can_merge": True, "quantized": True},
    "ia3": {"trains": "one scaling vector per adapted module", "can_merge": True, "quantized": True},
    "prefix": {"trains": "key/value prefixes in every layer", "can_merge": False, "quantized": True},
    "prompt": {"trains": "soft-prompt embeddings", "can_merge": False, "quantized": True},
    "ptuning": {"trains": "prompt embeddings + MLP/LSTM prompt encoder", "can_merge": False, "quantized": True},
    "adapter": {"trains": "bottleneck MLPs after attention / MLP", "can_merge": False, "quantized": True},
}
_NO_MERGE_WHY = {
    "prefix": "it adds key/value vectors to attention, which no weight matrix can express",
    "prompt": "it prepends learned input embeddings, which no weight matrix can express",
    "ptuning": "it prepends learned input embeddings, which no weight matrix can express",
    "adapter": "its bottleneck MLP is a new non-linear block, not a change of an existing weight",
}


def can_merge(adapter_type: str) -> bool:
    """True when the trained update can be folded into the base weights (LoRA, DoRA, IA3)."""
    if adapter_type not in METHODS:
        raise ConfigError(f"unknown adapter type {adapter_type!r}; known: {', '.join(METHODS)}")
    return METHODS[adapter_type]["can_merge"]


def require_mergeable(adapter_type: str) -> None:
    if not can_merge(adapter_type):
        raise UserError(
            f"a `{adapter_type}` adapter cannot be merged into the base model: {_NO_MERGE_WHY[adapter_type]}. "
            "Serve or evaluate it as an adapter on top of the base (load_adapter), or train lora/dora/ia3 to merge"
        )


# --- target modules -------------------------------------------------------------------------------


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


# --- builders: AdapterConfig + model -> PEFT config -----------------------------------------------
# task_type: CAUSAL_LM, or SEQ_CLS for a reward model's scalar head (PEFT then trains and saves `score`).

_LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def lora_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM", use_dora: bool = False):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=resolve_target_modules(model, cfg.target_modules),
        modules_to_save=cfg.modules_to_save or None,
        use_rslora=cfg.use_rslora,
        use_dora=use_dora,
        init_lora_weights=_LORA_INIT[cfg.init],
        rank_pattern=dict(cfg.rank_pattern),
        alpha_pattern=dict(cfg.alpha_pattern),
        bias="none",
        task_type=task_type,
    )


def dora_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    return lora_config(cfg, model, task_type=task_type, use_dora=True)


def ia3_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    from peft import IA3Config

    targets = resolve_target_modules(model, cfg.target_modules)
    ff = cfg.ia3.feedforward_modules
    if isinstance(ff, str) and ff in ("mlp", "attention", "all-linear"):
        feedforward = sorted(set(targets) & set(resolve_target_modules(model, ff, "adapter.ia3.feedforward_modules")))
    else:
        feedforward = resolve_target_modules(model, ff, "adapter.ia3.feedforward_modules")
        outside = sorted(set(feedforward) - set(targets))
        if outside:
            raise ConfigError(f"`adapter.ia3.feedforward_modules`: {outside} are not in adapter.target_modules {targets}; "
                              "feedforward modules must be adapted modules")
    return IA3Config(target_modules=targets, feedforward_modules=feedforward,
                     modules_to_save=cfg.modules_to_save or None, task_type=task_type)


def prefix_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    from peft import PrefixTuningConfig

    o = cfg.prefix
    return PrefixTuningConfig(num_virtual_tokens=o.num_virtual_tokens, prefix_projection=o.projection,
                              encoder_hidden_size=o.encoder_hidden_size, modules_to_save=cfg.modules_to_save or None,
                              task_type=task_type)


def prompt_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    from peft import PromptTuningConfig

    o = cfg.prompt
    extra = {}
    if o.init_text:
        # PEFT tokenizes the init text with the model's own tokenizer (a local dir or hub id).
        extra = dict(prompt_tuning_init="TEXT", prompt_tuning_init_text=o.init_text,
                     tokenizer_name_or_path=model.config._name_or_path)
    return PromptTuningConfig(num_virtual_tokens=o.num_virtual_tokens, modules_to_save=cfg.modules_to_save or None,
                              task_type=task_type, **extra)


def ptuning_config(cfg: AdapterConfig, model, task_type: str = "CAUSAL_LM"):
    from peft import PromptEncoderConfig

    o = cfg.ptuning
    return PromptEncoderConfig(num_virtual_tokens=o.num_virtual_tokens, encoder_reparameterization_type=o.encoder.upper(),
                               encoder_hidden_size=o.encoder_hidden_size, modules_to_save=cfg.modules_to_save or None,
                               task_type=task_type)


PEFT_BUILDERS = {"lora": lora_config, "dora": dora_config, "ia3": ia3_config, "prefix": prefix_config,
                 "prompt": prompt_config, "ptuning": ptuning_config}


def apply_adapter(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with the configured adapter (or return it unchanged for full fine-tuning).
    task_type SEQ_CLS (reward models) makes PEFT train and save the new `score` head in full."""
    if cfg.type == "none":
        return model
    if cfg.type == "adapter":
        from .bottleneck import add_bottleneck_adapters

        return add_bottleneck_adapters(model, cfg.bottleneck, modules_to_save=cfg.modules_to_save)
    from peft import get_peft_model

    return get_peft_model(model, PEFT_BUILDERS[cfg.type](cfg, model, task_type=task_type))


def save_adapter(model, out_dir: Path, full_state: dict | None = None) -> None:
    """PEFT's own format for PEFT adapters; bottleneck.json + safetensors for ours. `full_state`: the
    gathered state dict of an FSDP-sharded model (its own parameters are one rank's shards)."""
    from .bottleneck import is_bottleneck_model, save_bottleneck

    if is_bottleneck_model(model):
        if full_state:
            raise ConfigError("`train.fsdp` is not supported with `adapter.type: adapter` (bottleneck); use DDP")
        save_bottleneck(model, out_dir)
    else:
        model.save_pretrained(out_dir, safe_serialization=True, **({"state_dict": full_state} if full_state else {}))


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Put the adapter saved in `adapter_dir` (any type) on top of `model`, for inference by default."""
    from .bottleneck import CONFIG_NAME, load_bottleneck

    adapter_dir = Path(adapter_dir)
    if (adapter_dir / CONFIG_NAME).is_file():
        return load_bottleneck(model, adapter_dir, trainable=trainable)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir} holds no adapter (neither adapter_config.json nor {CONFIG_NAME}); "
                        "point at a run's adapter/ directory")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def adapter_type_of(adapter_dir: str | Path) -> str:
    """The tunesmith adapter type of a saved adapter directory (for `require_mergeable`)."""
    import json

    from .bottleneck import CONFIG_NAME

    adapter_dir = Path(adapter_dir)
    if (adapter_dir / CONFIG_NAME).is_file():
        return "adapter"
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    peft_type = cfg.get("peft_type", "")
    if peft_type == "LORA":
        return "dora" if cfg.get("use_dora") else "lora"
    names = {"IA3": "ia3", "PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning"}
    if peft_type not in names:
        raise UserError(f"{adapter_dir}/adapter_config.json: PEFT type {peft_type!r} is not one tunesmith trains")
    return names[peft_type]


def merge_adapter(model, adapter_type: str):
    """Fold a LoRA/DoRA/IA3 adapter into the base and return the plain transformers model."""
    require_mergeable(adapter_type)
    return model.merge_and_unload()
