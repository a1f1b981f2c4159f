"""The one interface every training objective implements; the loop and train/run.py call only this.

A method is an `Objective`: what data it reads, how it batches, what module the loop trains, what
it prepares before the first step, and the loss of a batch. The loop (train/loop.py) never asks
which method is training (DESIGN principle 2). In the order a run calls them:

    head                      class attribute, read once by run.py: "causal" (a language-model head)
                              or "score" (a scalar sequence-classification head, reward models)
    prepare_data(tok, seed)   -> PreparedData: train/eval rows of whatever type this objective reads
    wrap(model)               -> nn.Module: the module the loop trains: DDP/FSDP wrap it, the
                              optimizer steps its trainable parameters and checkpoints save them.
                              It holds the model as `.model` (what the result saves) and may add
                              trainable parameters of its own (PPO's value head): those are
                              optimized and checkpointed too, but not counted in the run's
                              "trainable of total" line and saved with the result only through
                              `result_tensors`
    setup(ctx)                once, after wrap and before FSDP sharding, DDP wrapping and checkpoint
                              restore: reference models, precomputed reference log-probs, reward
                              models to score rollouts with (`SetupContext`)
    -- then, per optimizer step, in the loop --
    rollout(policy, rows, step)   this process's micro-batches of sampled rows -> the micro-batches
                              to train on. Called under `torch.no_grad()`, in train mode, before any
                              micro-batch is collated. Default: the rows as they are (offline data).
                              Online RL (GRPO, RLOO, PPO) overrides it: the rows are prompts;
                              generate with `policy` (the unwrapped module `wrap` returned, with the
                              current weights; `policy.model` is the transformers / PEFT model that
                              `generate` runs on), score the completions, compute advantages (and old /
                              reference log-probs), and return the micro-batches of generated rows.
                              Every process must return the same number of micro-batches (DDP/FSDP
                              synchronise per micro-batch), each a non-empty list of rows whose
                              len() is its token count (throughput); the loop counts `loss_units`
                              over the collated batches. Switch `policy` to eval mode for sampling
                              and back; anything the step needs later (old log-probs, advantages,
                              rewards) travels in the rows and comes out of `collate` as tensors.
    collate(rows, pad_id)     -> dict of tensors: one micro-batch (the loop moves it to the device)
    loss_units(batch)         -> int: what the step's summed loss is divided by (label tokens for
                              SFT, pairs for DPO, examples for KTO), summed over the whole step's
                              micro-batches on every process before the first backward
    step(model, batch)        -> (summed loss, metrics): under the run's autocast, with grad in
                              training and under no_grad in evaluation. Metrics are
                              {name: (sum, count)}; the loop adds them over micro-batches and
                              processes and logs sum / count as `name` (`eval_name` in evaluation)
    state_dict() / load_state_dict(d)   the objective's own JSON-able state (an adaptive KL
                              coefficient), saved in each checkpoint's state.json and restored on --resume
    -- after training --
    result_tensors(wrapper)   -> {file: tensors}: safetensors files saved into the result directory
                              beside the adapter / model (PPO's value head); none by default
    report_sections(run_dir)  -> [(title, markdown)]: the objective's part of report.md

Evaluation runs `collate` and `step` over the eval rows (no rollout): an online-RL objective's eval
rows are whatever its `prepare_data` put there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn


@dataclass
class SetupContext:
    """What `Objective.setup` may use. `autocast()` is the loop's own precision context: anything
    that must compute exactly what a training step computes (reference log-probs) runs under it."""
    wrapper: nn.Module  # what `wrap` returned: not yet wrapped by DDP / sharded by FSDP
    data: Any  # the PreparedData of `prepare_data`
    pad_id: int
    tokenizer: Any
    device: torch.device
    process_index: int
    num_processes: int
    gather: Callable[[torch.Tensor], torch.Tensor]  # every process's tensor (same shape), concatenated in rank order
    autocast: Callable[[], ContextManager]
    say: Callable[[str], None]


class Objective:
    """Default hooks: next-token training on token rows. Subclasses override what differs and must
    implement `loss_units` and `step`."""

    head = "causal"

    def __init__(self, cfg):
        self.cfg = cfg

    def prepare_data(self, tokenizer, seed: int):
        from ..data.pipeline import prepare_data

        return prepare_data(self.cfg.data, tokenizer, seed=seed)

    def wrap(self, model: nn.Module) -> nn.Module:
        from ..train.forward import CausalLMLoss

        return CausalLMLoss(model, self.cfg.train.loss_chunk_size)

    def setup(self, ctx: SetupContext) -> None:
        """Nothing to prepare by default."""

    def rollout(self, policy: nn.Module, micro_batches: list[list], step: int) -> list[list]:
        return micro_batches

    def collate(self, rows: list, pad_id: int) -> dict[str, torch.Tensor]:
        from ..data.packing import collate

        return collate(rows, pad_id)

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define loss_units")

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, tuple[float, int]]]:
        raise NotImplementedError(f"{type(self).__name__} must define step")

    def state_dict(self) -> dict:
        """JSON-able state that must survive a resume; none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def result_tensors(self, wrapper: nn.Module, full_state: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """{file name: tensors} the objective adds to the result directory (adapter/ or model/) as
        safetensors files: what it trained besides the model (PPO's value head). `full_state`: the
        gathered state dict of a sharded wrapper (FSDP), keyed by the wrapper's parameter names."""
        return {}

    def report_sections(self, run_dir: Path) -> list[tuple[str, str]]:
        return []
