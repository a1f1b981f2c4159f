"""GRPO on 2 processes (DDP over gloo, CPU) takes the step one process with accumulation 2 takes.

The same 2 prompt groups per step: one process samples both (two micro-batches), two processes one
each. Every completion is sampled from its own generator seeded by its place in the global batch, so
the completions are the same; the `dapo` loss divides by the completion tokens of the whole step (both
micro-batches, both processes), which a stop string makes unequal between the halves. So the loss,
the gradient norm and the updated weights must agree. A per-process or per-micro-batch token count
would change the gradient's direction (caught by the weights even after AdamW's first, sign-like
step) and its norm (caught by grad_norm).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


def _config(tmp_path, tiny_dir, name: str, accum: int):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "Name a color."}) + "\n" for _ in range(8)))
    cfg = {"model": {"path": str(tiny_dir), "dtype": "fp32"}, "method": "grpo", "data": {"train": [str(prompts)]},
           "adapter": {"type": "none"},
           "rl": {"num_generations": 4, "max_new_tokens": 8, "stop": ["e"], "rewards": ["length"], "target_length": 12,
                  "loss_type": "dapo", "samples_every": 1},
           "train": {"precision": "fp32", "max_steps": 1, "micro_batch_size": 1, "grad_accum_steps": accum, "lr": 1e-3,
                     "warmup_steps": 0, "scheduler": "constant", "save_every": 0, "progress": False, "seed": 0},
           "output_dir": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_processes_equal_one_process_with_accumulation(tiny_dir, tmp_path):
    from torchrun import torchrun_train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_config(tmp_path, tiny_dir, "single", accum=2))
    finally:
        torch.set_num_threads(n)
    proc = torchrun_train(_config(tmp_path, tiny_dir, "ddp", accum=1))
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = read_metrics(tmp_path / "single" / "metrics.jsonl"), read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    for key in ("reward", "completion_length"):
        assert one[0][key] == pytest.approx(two[0][key], abs=1e-6), key
    assert one[0]["loss"] == pytest.approx(two[0]["loss"], abs=1e-6)
    assert one[0]["grad_norm"] == pytest.approx(two[0]["grad_norm"], rel=1e-5)
    # the two groups' completions have different token counts: the global dapo count matters
    texts = [json.loads(x)["completion"] for x in (tmp_path / "single" / "samples.jsonl").read_text().splitlines()]
    assert len(texts) == 8 and sum(map(len, texts[:4])) != sum(map(len, texts[4:]))
    wa = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert any(not torch.equal(wa[k], base[k]) for k in wa)  # the step did move the weights
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
