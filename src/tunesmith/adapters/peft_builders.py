"""PEFT config builders: AdapterConfig + base model -> the PEFT config of one adapter type.

task_type: CAUSAL_LM, or SEQ_CLS for a reward model's scalar head (PEFT then trains and saves `score`).
The registry (`registry.py`) names which builder belongs to which `adapter.type`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config validation may ask the registry, so nothing here imports config at run time
    from ..config import AdapterConfig

from ..errors import ConfigError
from .targets import resolve_target_modules


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
