"""The loop reaches a method only through the `Objective` hooks (objectives/base.py). An objective
registered under a method name is used whole: its rollout replaces the sampled micro-batches
before anything is collated (what online RL will do with generated rows), under no_grad, once per
step; the loss is normalised over what the rollout returned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith import objectives
from tunesmith.objectives.sft import CausalLMObjective
from tunesmith.train.callbacks import Callback
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration


class OneRowRollout(CausalLMObjective):
    """Keeps one row of the step's first micro-batch, as if generation had produced one sequence."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls: list[tuple[int, int, bool, bool]] = []  # (step, micro-batches in, grad on, policy training)
        self.kept: list[int] = []  # tokens of the row kept at each step
        self.collated: list[int] = []

    def rollout(self, policy, micro_batches, step):
        self.calls.append((step, len(micro_batches), torch.is_grad_enabled(), policy.training))
        row = micro_batches[0][0]
        self.kept.append(len(row))
        return [[row]]

    def collate(self, rows, pad_id):
        self.collated.append(len(rows))
        return super().collate(rows, pad_id)


class Seen(Callback):
    def __init__(self):
        self.events: list[str] = []

    def on_train_start(self, module, optimizer):
        self.events.append("start")

    def on_before_optimizer_step(self, step, module):
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
        self.events.append(f"grads {step}")

    def on_step_end(self, step, record):
        self.events.append(f"end {step}")


def test_rollout_replaces_the_micro_batches(tiny_dir, alpaca64, tmp_path, monkeypatch):
    made = []
    monkeypatch.setitem(objectives.OBJECTIVES, "sft", lambda cfg: made.append(OneRowRollout(cfg)) or made[-1])
    seen = Seen()
    summary = train(None, [f"model.path={tiny_dir}", f"data.train={alpaca64}", "data.format=alpaca", "data.max_length=128",
                           "model.dtype=fp32", "train.precision=fp32", "train.max_steps=3", "train.micro_batch_size=2",
                           "train.grad_accum_steps=2", "train.save_every=0", "train.progress=false", "adapter.dropout=0",
                           f"output_dir={tmp_path / 'run'}"], callbacks=[seen, lambda step, record: seen.events.append("fn")])
    (obj,) = made
    assert obj.calls == [(0, 2, False, True), (1, 2, False, True), (2, 2, False, True)]
    assert obj.collated == [1, 1, 1]  # only what the rollout returned was batched
    records = read_metrics(Path(summary["run_dir"]) / "metrics.jsonl")
    assert [r["tokens"] for r in records] == [sum(obj.kept[: i + 1]) for i in range(3)]
    assert seen.events == ["start", "grads 1", "end 1", "fn", "grads 2", "end 2", "fn", "grads 3", "end 3", "fn"]
