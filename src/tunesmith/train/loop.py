"""The one training loop. Every method runs through `train_loop`; a method only brings an objective.

Read top to bottom: per optimizer step, collect this process's micro-batches, count the loss units
(label tokens) of the whole step across processes, run forward/backward on each micro-batch with
its summed loss divided by that global count, clip, guard against NaN, step, log, evaluate,
checkpoint. Nothing here knows which method is training.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig
from ..data.packing import Row, collate
from ..errors import TrainingError
from . import checkpoint as ckpt
from .fsdp import as_float, no_grad_sync
from .sampler import StepSampler


@dataclass
class LoopState:
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_eval: float = math.inf
    best_eval_step: int = -1
    bad_evals: int = 0
    stop_reason: str = ""
    last_loss: float = math.nan
    last_eval: float = math.nan

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "stop_reason"}


@dataclass
class LoopParts:
    """Everything the loop touches, built by train/run.py."""
    model: torch.nn.Module  # the (possibly DDP-wrapped) CausalLMLoss
    objective: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accelerator: object
    train_rows: list[Row]
    eval_rows: list[Row]
    pad_id: int
    run_dir: Path
    log: object  # MetricsLog (rank 0) or None
    progress: object
    trackers: object
    callbacks: list[Callable] = field(default_factory=list)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(cfg: RunConfig, device: torch.device):
    if cfg.train.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def _real_tokens(rows: list[Row]) -> int:
    return sum(len(r) for r in rows)


def _collate_fn(objective) -> Callable:
    """The objective's own batching (preference pairs, ...) or the token rows of SFT/pretraining."""
    return getattr(objective, "collate", None) or collate


def _add_metrics(into: dict, metrics: dict) -> None:
    """Objectives report metrics as {name: (sum, count)}; sums and counts add over micro-batches."""
    for k, (total, n) in metrics.items():
        s, c = into.get(k, (0.0, 0))
        into[k] = (s + float(total), c + n)


def _mean_metrics(acc, sums: dict, prefix: str = "") -> dict:
    if not sums:
        return {}
    keys = sorted(sums)
    t = acc.reduce(torch.tensor([v for k in keys for v in sums[k]], dtype=torch.float64, device=acc.device), reduction="sum")
    return {f"{prefix}{k}": (t[2 * i] / t[2 * i + 1]).item() for i, k in enumerate(keys) if t[2 * i + 1] > 0}


@torch.no_grad()
def evaluate_with_metrics(parts: LoopParts, cfg: RunConfig) -> tuple[float, int, dict]:
    """Unit-weighted mean loss over the eval rows, sharded across processes, and the objective's
    metrics as `eval_<name>`."""
    acc, model = parts.accelerator, parts.model
    if not parts.eval_rows:
        return math.nan, 0, {}
    model.eval()
    mine = parts.eval_rows[acc.process_index :: acc.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=acc.device)
    sums: dict = {}
    mb = cfg.train.micro_batch_size
    # Every rank runs the same number of forwards: FSDP all-gathers parameters inside each one, so a
    # rank with one batch fewer would leave the others waiting. The extra batch repeats a row and is
    # not counted.
    n_batches = math.ceil(math.ceil(len(parts.eval_rows) / acc.num_processes) / mb)
    for b in range(n_batches):
        rows = mine[b * mb : (b + 1) * mb]
        counted = bool(rows)
        batch = _to(_collate_fn(parts.objective)(rows or parts.eval_rows[:1], parts.pad_id), acc.device)
        with _autocast(cfg, acc.device):
            loss_sum, metrics = parts.objective.step(model, batch)
        if not counted:
            continue
        _add_metrics(sums, metrics)
        total += torch.tensor([loss_sum.item(), parts.objective.loss_units(batch)], dtype=torch.float64, device=acc.device)
    total = acc.reduce(total, reduction="sum")
    model.train()
    loss = (total[0] / total[1]).item() if total[1] > 0 else math.nan
    return loss, int(total[1]), _mean_metrics(acc, sums, "eval_")


def evaluate(parts: LoopParts, cfg: RunConfig) -> tuple[float, int]:
    """Token-weighted mean loss over the eval rows, sharded across processes."""
    loss, units, _ = evaluate_with_metrics(parts, cfg)
    return loss, units


def train_loop(parts: LoopParts, cfg: RunConfig, state: LoopState, total_steps: int, save_final_checkpoint: bool = True) -> LoopState:
    acc, model, opt, sched, objective = parts.accelerator, parts.model, parts.optimizer, parts.scheduler, parts.objective
    tc = cfg.train
    sampler = StepSampler(len(parts.train_rows), tc.micro_batch_size, tc.grad_accum_steps, acc.num_processes, acc.process_index, tc.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    clip = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
    scaler = torch.amp.GradScaler(acc.device.type) if tc.precision == "fp16" else None
    ckpt_root = parts.run_dir / "checkpoints"
    model.train()
    t_start = time.perf_counter() - state.elapsed_s

    while state.step < total_steps:
        t0 = time.perf_counter()
        rows = [[parts.train_rows[i] for i in idx] for idx in sampler.micro_batches(state.step)]
        batches = [_to(_collate_fn(objective)(r, parts.pad_id), acc.device) for r in rows]
        # The normaliser of the whole optimizer step: label tokens of every micro-batch on every process.
        local = torch.tensor([sum(objective.loss_units(b) for b in batches), sum(_real_tokens(r) for r in rows)],
                             dtype=torch.float64, device=acc.device)
        global_units, global_tokens = acc.reduce(local, reduction="sum").tolist()
        if global_units == 0:
            raise TrainingError(f"step {state.step + 1}: no label tokens in the whole batch; check the data's label masking")

        loss_sum_local = torch.zeros((), dtype=torch.float64, device=acc.device)
        metric_sums: dict = {}
        for m, batch in enumerate(batches):
            # Gradients are all-reduced only on the last micro-batch of the step.
            sync = contextlib.nullcontext() if m == len(batches) - 1 else no_grad_sync(model, acc)
            with sync:
                with _autocast(cfg, acc.device):
                    loss_sum, metrics = objective.step(model, batch)
                # DDP averages gradients over processes; multiplying by world size turns that into a sum.
                loss = loss_sum * acc.num_processes / global_units
                (scaler.scale(loss) if scaler else loss).backward()
            loss_sum_local += loss_sum.detach().double()
            _add_metrics(metric_sums, metrics)

        step_loss = (acc.reduce(loss_sum_local, reduction="sum") / global_units).item()
        if scaler:
            scaler.unscale_(opt)
        grad_norm = as_float(acc.clip_grad_norm_(trainable, clip))
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)) and scaler is None:
            last = ckpt.list_checkpoints(ckpt_root)
            raise TrainingError(
                f"step {state.step + 1}: loss {step_loss} / grad norm {grad_norm} is not finite; the weights were not updated. "
                f"Last good checkpoint: {last[-1] if last else 'none'}. Lower train.lr, use train.precision: fp32/bf16 "
                "instead of fp16, or look for extreme rows in the data."
            )
        lr = sched.get_last_lr()[0]
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

        state.step += 1
        state.tokens += int(global_tokens)
        state.last_loss = step_loss
        dt = time.perf_counter() - t0
        state.elapsed_s = time.perf_counter() - t_start
        record = {"step": state.step, "epoch": round(sampler.epoch_of(state.step), 4), "loss": step_loss, "lr": lr,
                  "grad_norm": grad_norm, "tokens": state.tokens, "tokens_per_s": round(global_tokens / dt, 1),
                  "elapsed_s": round(state.elapsed_s, 3)}
        record.update(_mean_metrics(acc, metric_sums))

        if tc.eval_every and state.step % tc.eval_every == 0 and state.step < total_steps:
            record.update(_eval_and_track(parts, cfg, state))

        if state.step % tc.log_every == 0 or state.step == total_steps:
            if parts.log is not None:
                parts.log.log(record)
            parts.trackers.log(record, state.step)
        parts.progress.update(1, loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{global_tokens / dt:,.0f}")
        for cb in parts.callbacks:
            cb(state.step, record)

        if tc.early_stopping_patience and state.bad_evals >= tc.early_stopping_patience:
            state.stop_reason = f"early stopping: eval loss did not improve for {state.bad_evals} evals (best {state.best_eval:.4f} at step {state.best_eval_step})"
        if tc.save_every and (state.step % tc.save_every == 0 or (state.stop_reason and save_final_checkpoint)):
            _checkpoint(parts, state, tc.keep_checkpoints)
        if state.stop_reason:
            break

    if not state.stop_reason:
        state.stop_reason = f"reached {total_steps} steps"
    return state


def _eval_and_track(parts: LoopParts, cfg: RunConfig, state: LoopState) -> dict:
    eval_loss, eval_tokens, eval_metrics = evaluate_with_metrics(parts, cfg)
    state.last_eval = eval_loss
    if eval_loss < state.best_eval - cfg.train.early_stopping_min_delta:
        state.best_eval, state.best_eval_step, state.bad_evals = eval_loss, state.step, 0
    else:
        state.bad_evals += 1
    parts.progress.write(f"step {state.step}: eval loss {eval_loss:.4f} (best {state.best_eval:.4f} at step {state.best_eval_step})")
    return {"eval_loss": eval_loss, "eval_tokens": eval_tokens, **eval_metrics}


def _checkpoint(parts: LoopParts, state: LoopState, keep: int) -> None:
    acc = parts.accelerator
    unwrapped = acc.unwrap_model(parts.model)
    root = parts.run_dir / "checkpoints"
    ckpt.save_checkpoint(root, state.step, unwrapped, parts.optimizer, parts.scheduler, state.to_json(),
                         rank=acc.process_index, world_size=acc.num_processes, barrier=acc.wait_for_everyone)
    if acc.is_main_process:
        ckpt.prune(root, keep)
