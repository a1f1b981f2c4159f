"""Precomputed reference log-probs under DDP: each of 2 processes computes half of the pairs and
the halves are gathered, into the same table one process computes alone (and the same losses)."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from tunesmith.quickstart.preference_task import past_tense_pairs
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


def _config(tmp_path, tiny_dir, name: str, micro: int):
    tr, ev = past_tense_pairs(24, 6, seed=1, copy_share=1.0)
    for file, rows in (("train.jsonl", tr), ("eval.jsonl", ev)):
        (tmp_path / file).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"path": str(tiny_dir), "dtype": "fp32"}, "method": "dpo",
           "data": {"train": [str(tmp_path / "train.jsonl")], "eval": [str(tmp_path / "eval.jsonl")], "max_length": 96},
           "dpo": {"max_prompt_length": 48, "precompute_ref": True, "ref_cache_dir": str(tmp_path / f"cache-{name}")},
           "adapter": {"type": "none"},
           "train": {"precision": "fp32", "max_steps": 2, "micro_batch_size": micro, "lr": 1e-3, "save_every": 0,
                     "progress": False, "seed": 0},
           "output_dir": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_precompute_is_sharded_and_gathered(tiny_dir, tmp_path):
    from torchrun import torchrun_train

    single = train(_config(tmp_path, tiny_dir, "single", micro=4))
    proc = torchrun_train(_config(tmp_path, tiny_dir, "ddp", micro=2))
    assert proc.returncode == 0, proc.stderr[-4000:]
    # 30 pairs (24 train + 6 eval) over 2 processes: 15 each, gathered on every process.
    assert "reference log-probs of 30 pairs computed" in proc.stderr
    assert "(15 or fewer on each of 2 processes)" in proc.stderr
    (one,) = (tmp_path / "cache-single" / "ref-logps").glob("*.safetensors")
    (two,) = (tmp_path / "cache-ddp" / "ref-logps").glob("*.safetensors")
    a, b = load_file(str(one))["ref_logps"], load_file(str(two))["ref_logps"]
    assert a.shape == b.shape == (30, 2)
    assert (a - b).abs().max() < 1e-4
    la = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl") if "loss" in r]
    lb = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl") if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)
    assert single["steps"] == 2
