"""Put an adapter on a base model, count what it will train before it exists, and fold it back in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config validation may ask the registry, so nothing here imports config at run time
    from ..config import AdapterConfig

from .counts import Dims, modules_to_save_count
from .registry import get_spec, require_mergeable
from .targets import adapted_linears, rank_warnings, resolve_target_modules

SCORE_HEAD = "score"  # transformers' name for the scalar head of *ForSequenceClassification


def _with_score_head(cfg: AdapterConfig, task_type: str) -> list[str]:
    """modules_to_save, plus the reward model's new score head: it starts random, so it must train
    (and be saved) whatever the adapter type. PEFT adds it itself for SEQ_CLS; our own types get it here."""
    names = list(cfg.modules_to_save)
    if task_type == "SEQ_CLS" and SCORE_HEAD not in names:
        names.append(SCORE_HEAD)
    return names


def apply_adapter(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with the configured adapter (or return it unchanged for full fine-tuning).
    task_type SEQ_CLS (reward models) trains and saves the new `score` head in full, for every type."""
    if cfg.type == "none":
        return model
    spec = get_spec(cfg.type)
    if task_type not in spec.task_types:
        raise ValueError(f"adapter.type {cfg.type} does not support task type {task_type}")  # config refuses it first
    if spec.is_peft:
        from peft import get_peft_model

        return get_peft_model(model, spec.peft_config(cfg, model, task_type=task_type))
    from .bottleneck import add_bottleneck_adapters

    return add_bottleneck_adapters(model, cfg.bottleneck, modules_to_save=_with_score_head(cfg, task_type))


def closed_form_trainable(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM") -> tuple[int, str]:
    """(count, the formula with its numbers) for the base `model` (not yet wrapped)."""
    n, text = get_spec(cfg.type).count(model, cfg, Dims.of(model))
    extra = modules_to_save_count(model, _with_score_head(cfg, task_type))
    if extra:
        text += f" + {extra:,} in modules_to_save"
    return n + extra, text


def adapter_warnings(model, cfg: AdapterConfig) -> list[str]:
    """What is legal but almost surely not meant, for the train log (a rank above a layer's dimensions)."""
    if cfg.type == "none" or "r" not in get_spec(cfg.type).options:  # only ranked (LoRA-family) types have a rank
        return []
    mats = adapted_linears(model, resolve_target_modules(model, cfg.target_modules))
    return rank_warnings(mats, cfg.r, dict(cfg.rank_pattern))


def merge_adapter(model, adapter_type: str):
    """Fold a LoRA/DoRA/IA3 adapter into the base and return the plain transformers model."""
    require_mergeable(adapter_type)
    return model.merge_and_unload()
