"""Tied input/output embeddings (SmolLM2, Qwen2-0.5B, Gemma: PITFALLS 28) in an adapter merge.

`lm_head.weight` and `embed_tokens.weight` are one tensor in a tied model. An adapter on either of
them ran, in training, as a change of that one side only (a LoRA on `lm_head` changes the output
projection, the input lookup still reads the base rows; `modules_to_save` trains a private copy).
Merging it into the shared tensor would change both sides: the merged model would not be the model
the adapter was trained as (the merge verification refuses it: logits off by whole units). So the
tie is broken on purpose before the merge: the output embedding gets its own copy of the weights,
and `config.json` says `tie_word_embeddings: false`, which every loader (transformers, llama.cpp via
our GGUF export, which then writes the output tensor) honours. Adapters that touch neither side
leave the tie as it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch


def is_tied(model) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def _module_names(model, module) -> list[str]:
    return [name for name, m in model.named_modules() if m is module]


def _matches(key: str, pattern) -> bool:
    """PEFT's rule: a list entry matches a module name or its dotted suffix; a string is a full regex."""
    if isinstance(pattern, str):
        return re.fullmatch(pattern, key) is not None
    return any(key == p or key.endswith("." + p) for p in pattern or [])


def touched_embeddings(model, adapters: list[Path]) -> list[str]:
    """Names of the tied embedding modules any of `adapters` targets or trains (modules_to_save)."""
    names = _module_names(model, model.get_input_embeddings()) + _module_names(model, model.get_output_embeddings())
    hit = set()
    for a in adapters:
        cfg = json.loads((a / "adapter_config.json").read_text(encoding="utf-8"))
        for key in ("target_modules", "modules_to_save", "trainable_token_indices"):
            pattern = cfg.get(key)
            if isinstance(pattern, dict):  # trainable_token_indices: {module name: [ids]}
                pattern = list(pattern)
            hit.update(n for n in names if pattern and _matches(n, pattern))
    return sorted(hit)


def untie_embeddings(model) -> None:
    """Give the output embedding its own copy of the tied weights and record the untie in the config."""
    out = model.get_output_embeddings()
    out.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone(),
                                    requires_grad=out.weight.requires_grad)
    model.config.tie_word_embeddings = False
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.tie_word_embeddings = False
