"""The one training loop. Every method runs through `train_loop`; a method only brings an objective.

Read top to bottom: per optimizer step, collect this process's micro-batches (and let the objective
replace them with generated ones: `Objective.rollout`, a no-op for offline data), count the loss units
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

import torch

from ..config import RunConfig
from ..errors import TrainingError
from ..objectives.base import Objective
from . import checkpoint as ckpt
from .callbacks import Callback
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
    model: torch.nn.Module  # what the objective's `wrap` returned, possibly DDP-wrapped or FSDP-sharded
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accelerator: object
    train_rows: list  # rows of the objective's own type
    eval_rows: list
    pad_id: int
    run_dir: Path
    log: object  # MetricsLog (rank 0) or None
    progress: object
    trackers: object
    scaler: torch.amp.GradScaler | None = None  # fp16 only; checkpointed with the optimizer
    callbacks: list[Callback] = field(default_factory=list)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(cfg: RunConfig, device: torch.device):
    """The precision context of every forward of the run (training, evaluation, reference log-probs)."""
    if cfg.train.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def _real_tokens(rows: list) -> int:
    return sum(len(r) for r in rows)


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
        batch = _to(parts.objective.collate(rows or parts.eval_rows[:1], parts.pad_id), acc.device)
        with autocast(cfg, acc.device):
            loss_sum, metrics = parts.objective.step(model, batch)
        if not counted:
            continue
        _add_metrics(sums, metrics)
        total += torch.tensor([loss_sum.item(), parts.objective.loss_units(batch)], dtype=torch.float64, device=acc.device)
    total = acc.reduce(total, reduction="sum")
    model.train()
    loss = (total[0] / total[1]).item() if total[1] > 0 else math.nan
    return loss, int(total[1]), _mean_metrics(acc, sums, "eval_")


def train_loop(parts: LoopParts, cfg: RunConfig, state: LoopState, total_steps: int) -> LoopState:
    acc, model, opt, sched, objective = parts.accelerator, parts.model, parts.optimizer, parts.scheduler, parts.objective
    tc = cfg.train
    sampler = StepSampler(len(parts.train_rows), tc.micro_batch_size, tc.grad_accum_steps, acc.num_processes, acc.process_index, tc.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    clip = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
    scaler = parts.scaler
    ckpt_root = parts.run_dir / "checkpoints"
    policy = acc.unwrap_model(model)  # for rollouts and callbacks: no DDP forward hooks
    for cb in parts.callbacks:
        cb.on_train_start(policy, opt)
    model.train()
    t_start = time.perf_counter() - state.elapsed_s

    while state.step < total_steps:
        t0 = time.perf_counter()
        rows = [[parts.train_rows[i] for i in idx] for idx in sampler.micro_batches(state.step)]
        with torch.no_grad():  # offline objectives return the rows; online RL generates here (objectives/base.py)
            rows = objective.rollout(policy, rows, state.step)
        batches = [_to(objective.collate(r, parts.pad_id), acc.device) for r in rows]
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
                with autocast(cfg, acc.device):
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
        for cb in parts.callbacks:
            cb.on_before_optimizer_step(state.step + 1, policy)
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
            cb.on_step_end(state.step, record)

        if tc.early_stopping_patience and state.bad_evals >= tc.early_stopping_patience:
            state.stop_reason = f"early stopping: eval loss did not improve for {state.bad_evals} evals (best {state.best_eval:.4f} at step {state.best_eval_step})"
        if tc.save_every and (state.step % tc.save_every == 0 or state.stop_reason):
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
    ckpt.save_checkpoint(root, state.step, unwrapped, parts.optimizer, parts.scheduler,
                         {**state.to_json(), "objective": parts.objective.state_dict()},
                         rank=acc.process_index, world_size=acc.num_processes, barrier=acc.wait_for_everyone,
                         scaler=parts.scaler)
    if acc.is_main_process:
        ckpt.prune(root, keep)
