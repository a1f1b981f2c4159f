"""The reference model of DPO-family and KTO training, in the cheapest form that is exact.

- LoRA / QLoRA: the reference IS the base model, so it is the same module with the adapter
  disabled (`PeftModel.disable_adapter()`), under no_grad. No second copy of the weights.
- Full fine-tuning: a frozen copy made before the first step (eval mode, no grad), or with
  `preference.precompute_ref: true` no model at all: the reference log-probs of every example are
  computed once before training (under the loop's autocast, so both forms are the same
  computation, sharded over the processes) into a (rows, 2) tensor indexed by the row's `id`, and
  cached on disk under a key of (model files, token ids of the data, max lengths, loss,
  precision), so a second run on the same data skips the pass.
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

from ..console import progress_bar
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
    def build(cls, wrapper) -> "Reference":
        if adapter_disabled(wrapper) is not None:
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


def cache_key(cfg, rows: list) -> str:
    """sha256 of what the reference log-probs depend on: model files (name, size, mtime), every
    example's token ids in row order, the max lengths, the loss and the precision."""
    h = hashlib.sha256()
    model_dir = Path(cfg.model.path).expanduser()
    # A directory: its files; a .gguf file (model.path may name one): the file itself.
    found = model_dir.glob("*") if model_dir.is_dir() else [model_dir] if model_dir.is_file() else []
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in found if p.is_file())
    h.update(json.dumps(["v2: (rows, 2) by row id", cfg.model.path, files, cfg.model.dtype, cfg.model.quantization,
                         cfg.train.precision, cfg.data.max_length, cfg.prompt_length(), cfg.preference.loss, cfg.method]).encode())
    for r in rows:
        for ids in (r.prompt_ids, r.chosen_ids, r.rejected_ids):
            h.update(len(ids).to_bytes(4, "little"))
            h.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]


def cache_dir(cfg) -> Path:
    return Path(cfg.preference.ref_cache_dir or os.environ.get("TUNESMITH_CACHE", "~/.cache/tunesmith")).expanduser() / "ref-logps"


def precompute(ctx, rows: list, collate, micro_batch: int, cfg, progress: bool = True) -> torch.Tensor:
    """Reference (chosen, rejected) log-probs of every pair: a (len(rows), 2) fp32 tensor on the
    CPU whose row i belongs to the pair with `id` i. From the cache when the key matches.

    Each process computes a contiguous 1/world share and the shares are gathered, so 8 GPUs take
    1/8 of the time. It runs under the loop's autocast (`ctx.autocast`), in eval mode: exactly
    the computation of a frozen-copy reference inside a training step."""
    if [r.id for r in rows] != list(range(len(rows))):
        raise RuntimeError("precompute: rows must come in id order (train then eval, as prepared)")
    path = cache_dir(cfg) / f"{cache_key(cfg, rows)}.safetensors"
    if path.is_file():
        ctx.say(f"dpo: reference log-probs read from the cache {path}")
        return load_file(path)["ref_logps"]
    share = math.ceil(len(rows) / ctx.num_processes)
    mine = rows[ctx.process_index * share : (ctx.process_index + 1) * share]
    was_training = inner(ctx.wrapper).training
    inner(ctx.wrapper).eval()
    vals = torch.zeros(share, 2, dtype=torch.float32, device=ctx.device)  # padded to `share`: gather needs equal shapes
    with progress_bar(total=len(mine), desc="reference log-probs", disable=not progress, leave=False) as bar:
        for i in range(0, len(mine), micro_batch):
            batch = {k: v.to(ctx.device) for k, v in collate(mine[i : i + micro_batch], ctx.pad_id).items()}
            with torch.no_grad(), adapter_disabled(ctx.wrapper) or contextlib.nullcontext(), ctx.autocast():
                # Before the first step the model itself is the reference (full fine-tuning).
                vals[i : i + micro_batch] = sequence_logps(inner(ctx.wrapper), batch)[0].float().view(-1, 2)
            bar.update(len(mine[i : i + micro_batch]))
    inner(ctx.wrapper).train(was_training)
    table = ctx.gather(vals)[: len(rows)].cpu()
    if not bool(torch.isfinite(table).all()):
        raise RuntimeError("a reference log-prob is not finite; check the model and data")
    if ctx.process_index == 0:
        with atomic_file(path) as tmp:
            save_file({"ref_logps": table.contiguous()}, str(tmp))
    ctx.say(f"dpo: reference log-probs of {len(rows)} pairs computed and cached in {path}"
            + (f" ({share} or fewer on each of {ctx.num_processes} processes)" if ctx.num_processes > 1 else ""))
    return table
