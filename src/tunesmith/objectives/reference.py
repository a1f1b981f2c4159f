"""The reference model of DPO-family and KTO training, in the cheapest form that is exact.

- LoRA / QLoRA: the reference IS the base model, so it is the same module with the adapter
  disabled (`PeftModel.disable_adapter()`), under no_grad. No second copy of the weights.
- Full fine-tuning: a frozen copy made before the first step (eval mode, no grad), or with
  `dpo.precompute_ref: true` no model at all: the reference log-probs of every example are
  computed once before training and cached on disk under a key of (model files, token ids of the
  data, max lengths, loss, precision), so a second run on the same data skips the pass.
  LoRA runs may precompute too (it saves the reference forward of every step).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..io import atomic_file
from .logps import sequence_logps


def inner(model):
    """The wrapper module under DDP / accelerate."""
    return getattr(model, "module", model)


def adapter_disabled(wrapper):
    """Context manager: the wrapper computes with the adapter off, or None when it has no adapter."""
    disable = getattr(inner(wrapper).model, "disable_adapter", None)
    return disable() if callable(disable) else None


class Reference:
    """Computes reference sequence log-probs for a packed batch."""

    def __init__(self, frozen=None):
        self.frozen = frozen  # a frozen SequenceLogps copy for full fine-tuning, else None

    @classmethod
    def build(cls, wrapper, needs_model: bool) -> "Reference":
        if not needs_model or adapter_disabled(wrapper) is not None:
            return cls(None)
        frozen = copy.deepcopy(inner(wrapper)).eval()
        frozen.requires_grad_(False)
        return cls(frozen)

    @torch.no_grad()
    def logps(self, wrapper, batch: dict) -> torch.Tensor:
        if self.frozen is not None:
            return sequence_logps(self.frozen, batch)[0]
        ctx = adapter_disabled(wrapper)
        if ctx is None:
            raise RuntimeError("no reference: full fine-tuning needs a frozen copy or precomputed reference log-probs")
        with ctx:
            return sequence_logps(inner(wrapper), batch)[0]


def cache_key(cfg, rows: dict[str, list]) -> str:
    """sha256 of what the reference log-probs depend on: model files (name, size, mtime), every
    example's token ids, the max lengths, the loss and the precision."""
    h = hashlib.sha256()
    model_dir = Path(cfg.model.path).expanduser()
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in model_dir.glob("*") if p.is_file()) if model_dir.is_dir() else []
    h.update(json.dumps([cfg.model.path, files, cfg.model.dtype, cfg.model.quantization, cfg.train.precision,
                         cfg.data.max_length, cfg.dpo.max_prompt_length, cfg.dpo.loss, cfg.method]).encode())
    for split, items in rows.items():
        h.update(split.encode())
        for r in items:
            for ids in (r.prompt_ids, r.chosen_ids, r.rejected_ids):
                h.update(len(ids).to_bytes(4, "little"))
                h.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]


def cache_dir(cfg) -> Path:
    return Path(cfg.dpo.ref_cache_dir or os.environ.get("TUNESMITH_CACHE", "~/.cache/tunesmith")).expanduser() / "ref-logps"


def precompute(wrapper, rows: dict[str, list], collate, pad_id: int, micro_batch: int, device,
               cfg, say=print, progress: bool = True) -> Path:
    """Fill `ref_chosen` / `ref_rejected` of every row, from the cache when the key matches."""
    path = cache_dir(cfg) / f"{cache_key(cfg, rows)}.safetensors"
    if path.is_file():
        saved = load_file(path)
        for split, items in rows.items():
            for r, (c, j) in zip(items, saved[split].tolist()):
                r.ref_chosen, r.ref_rejected = c, j
        say(f"dpo: reference log-probs read from the cache {path}")
        return path
    was_training = inner(wrapper).training
    inner(wrapper).eval()
    out = {}
    total = sum(len(v) for v in rows.values())
    with tqdm(total=total, desc="reference log-probs", disable=not progress, leave=False) as bar:
        for split, items in rows.items():
            vals = []
            for i in range(0, len(items), micro_batch):
                batch = {k: v.to(device) for k, v in collate(items[i : i + micro_batch], pad_id).items()}
                with torch.no_grad(), adapter_disabled(wrapper) or contextlib.nullcontext():
                    # Before the first step the model itself is the reference (full fine-tuning).
                    lp = sequence_logps(inner(wrapper), batch)[0].float().cpu()
                vals.append(lp.view(-1, 2))
                bar.update(len(items[i : i + micro_batch]))
            out[split] = torch.cat(vals) if vals else torch.zeros(0, 2)
            for r, (c, j) in zip(items, out[split].tolist()):
                r.ref_chosen, r.ref_rejected = c, j
    inner(wrapper).train(was_training)
    if not all(math.isfinite(v) for t in out.values() for v in t.flatten().tolist()):
        raise RuntimeError("a reference log-prob is not finite; check the model and data")
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp))
    say(f"dpo: reference log-probs of {total} pairs computed and cached in {path}")
    return path

