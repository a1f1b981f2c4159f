"""Checkpoints that survive SIGKILL at any moment, and resume that reproduces the run exactly.

A checkpoint is written into `checkpoints/.tmp-step-N/`, ends with `manifest.json` (size and
sha256 of every file), and only then is renamed to `checkpoints/step-N/`: a directory with that
name is complete by construction. On resume the manifest is checked again, so a checkpoint that
was damaged later (truncated copy, disk error) is reported and skipped for the previous one.

Contents: `trainable.safetensors` (every parameter that requires grad, fp32 master copy),
`optimizer.pt` and `scheduler.pt` (tensors and numbers only, loaded with `weights_only=True`:
nothing is unpickled), `scaler.pt` in fp16 runs (the GradScaler's loss scale and growth tracker:
without it a resumed run restarts at the initial scale and its steps differ), `rng-<rank>.pt` (torch, CUDA and Python RNG states), `state.json`
(step, tokens, early-stopping state; the data position follows from the step).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import fsdp
from ..io import plain_permissions

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_root: Path, step: int, model, optimizer, scheduler, state: dict, rank: int = 0,
                    world_size: int = 1, barrier=lambda: None, scaler=None) -> Path:
    """Every rank writes its RNG state; rank 0 writes the rest and commits with the rename.
    A sharded (FSDP) model's weights and optimizer state are gathered first, on every rank."""
    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".tmp-step-{step}"
    sharded = fsdp.is_sharded(model)
    if sharded:  # collectives: every rank takes part, rank 0 receives
        weights = fsdp.full_trainable_state(model)
        optim_state = fsdp.full_optimizer_state(model, getattr(optimizer, "optimizer", optimizer))
    else:
        weights, optim_state = None, None
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if rank == 0:
        save_file(weights if sharded else trainable_state(model), str(tmp / "trainable.safetensors"))
        plain_permissions(tmp / "trainable.safetensors")
        torch.save(optim_state if sharded else optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "world_size": world_size,
                                                    "optimizer_format": "by_name" if sharded else "by_index"}, indent=2))
    barrier()
    if rank == 0:
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        for p in files:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_root)
    barrier()
    return final


def verify(ckpt: Path) -> str | None:
    """None when complete and intact, else what is wrong."""
    mf = ckpt / MANIFEST
    if not mf.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError:
        return "unreadable manifest"
    for name, meta in manifest.items():
        p = ckpt / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != meta["bytes"]:
            return f"{name} has {p.stat().st_size} bytes, expected {meta['bytes']}"
        if _sha256(p) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_valid(ckpt_root: Path, warn=print) -> Path | None:
    for ckpt in reversed(list_checkpoints(ckpt_root)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        warn(f"skipping checkpoint {ckpt}: {problem}")
    return None


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, rank: int = 0, scaler=None) -> dict:
    """Restore weights, optimizer, scheduler, the fp16 GradScaler and this rank's RNG; return state.json."""
    weights = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise RuntimeError(f"checkpoint {ckpt} does not fit this model: {len(set(weights) ^ expected)} parameter names differ")
    saved = json.loads((ckpt / "state.json").read_text())
    sharded = fsdp.is_sharded(model)
    if (saved.get("optimizer_format", "by_index") == "by_name") != sharded:
        raise RuntimeError(f"checkpoint {ckpt} was written by a {'sharded' if not sharded else 'non-sharded'} run; "
                           "resume with the same `train.fsdp` setting")
    optim_state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    if sharded:
        fsdp.load_sharded(model, getattr(optimizer, "optimizer", optimizer), weights, optim_state)
    else:
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    if scaler is not None:
        if not (ckpt / "scaler.pt").is_file():
            raise RuntimeError(f"checkpoint {ckpt} has no scaler.pt (written before fp16 checkpoints kept the loss scale); "
                               "an exact fp16 resume is not possible from it: start the run again with --overwrite")
        scaler.load_state_dict(torch.load(ckpt / "scaler.pt", weights_only=True))
    rng_file = ckpt / f"rng-{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return saved


def prune(ckpt_root: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
