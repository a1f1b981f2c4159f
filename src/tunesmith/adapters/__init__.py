"""Adapters: one registry of every `adapter.type` and what each stage needs from it.

    registry.py       one AdapterSpec per type: builder, closed-form count, mergeable or why not,
                      options, task types (get_spec, can_merge, require_mergeable)
    peft_builders.py  AdapterConfig -> PEFT config (LoRA, DoRA, IA3, prefix, prompt, P-tuning)
    bottleneck.py     Houlsby bottleneck adapters, which PEFT does not have
    counts.py         trainable-parameter counts in closed form, from the base's shapes alone
    targets.py        target-module presets resolved against the model's linear layers
    apply.py          apply_adapter, closed_form_trainable, merge_adapter
    saving.py         save_adapter / load_adapter and the sidecar (type, task type, base quantization)

Serving and training ask `get_spec(type)` instead of branching on the type name.
"""

from .apply import SCORE_HEAD, adapter_warnings, apply_adapter, closed_form_trainable, merge_adapter
from .peft_builders import dora_config, ia3_config, lora_config, prefix_config, prompt_config, ptuning_config
from .registry import METHODS, SPECS, AdapterSpec, allowed_options, can_merge, get_spec, require_mergeable
from .saving import (SIDECAR, adapter_task_type, adapter_type_of, base_quantization, load_adapter, read_sidecar,
                     require_not_adapter, save_adapter, short_load_error, training_quantization, unknown_quantization)
from .targets import ATTENTION_NAMES, MLP_NAMES, linear_module_names, resolve_target_modules

__all__ = [
    "ATTENTION_NAMES", "MLP_NAMES", "METHODS", "SCORE_HEAD", "SIDECAR", "SPECS", "AdapterSpec", "adapter_task_type",
    "adapter_type_of", "adapter_warnings", "allowed_options", "apply_adapter", "base_quantization", "can_merge",
    "closed_form_trainable", "dora_config", "get_spec", "ia3_config", "linear_module_names", "load_adapter",
    "lora_config", "merge_adapter", "prefix_config", "prompt_config", "ptuning_config", "read_sidecar",
    "require_mergeable", "require_not_adapter", "resolve_target_modules", "save_adapter", "short_load_error",
    "training_quantization",
    "unknown_quantization",
]
