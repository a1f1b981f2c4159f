"""Reward models with every kind of adapter, and `tunesmith score` refusing what is not a reward model.

A reward model's scalar head is new (random) at step 0, so whatever the adapter type it must train in
full, be saved beside the adapter, and be loaded back by `tunesmith score`. Before the adapter
registry, bottleneck adapters ignored the task type: the head stayed frozen at its random init, was
not saved, and `score` could not load the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.cli import main as cli_main
from tunesmith.quickstart.preference_task import past_tense_pairs
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration
D, L = 64, 2  # the tiny Llama: hidden 64, 2 layers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pref")
    tr, ev = past_tense_pairs(48, 16, seed=1, copy_share=1.0)
    for name, rows in (("train.jsonl", tr), ("eval.jsonl", ev)):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _reward_run(tiny_dir, data: Path, out: Path, *extra) -> dict:
    ov = [f"model.path={tiny_dir}", f"data.train={data / 'train.jsonl'}", f"data.eval={data / 'eval.jsonl'}",
          "method=reward", "data.max_length=96", "dpo.max_prompt_length=48", "train.micro_batch_size=8",
          "train.precision=fp32", "train.progress=false", "train.lr=3e-3", "train.max_steps=4", "train.eval_every=2",
          f"output_dir={out}"]
    return train(None, ov + list(extra), overwrite=True)


def test_bottleneck_reward_head_trains_saves_and_scores(tiny_dir, pref_data, tmp_path, capsys):
    run_dir = tmp_path / "rm"
    summary = _reward_run(tiny_dir, pref_data, run_dir, "adapter.type=adapter", "adapter.bottleneck.size=8")
    # Trainable: the bottlenecks (points·(2·d·s + s + d)) plus the score head (d → 1, no bias), which trains in full.
    assert summary["trainable_params"] == L * 2 * (2 * D * 8 + 8 + D) + D
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert "score.weight" in saved and saved["score.weight"].shape == (1, D)
    side = json.loads((run_dir / "adapter" / "tunesmith_adapter.json").read_text())
    assert side["task_type"] == "SEQ_CLS" and side["adapter_type"] == "adapter" and side["base_quantization"] == "none"

    # `score` loads the run (the trained head included): its pairwise accuracy and the scores equal the run's last eval.
    last = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_rewards/accuracy" in r][-1]
    capsys.readouterr()
    out = tmp_path / "new" / "dir" / "scores.jsonl"  # parent folders that do not exist yet are created
    assert cli_main(["score", str(run_dir / "adapter"), str(pref_data / "eval.jsonl"), "--out", str(out)]) == 0
    assert f"pairwise accuracy {last['eval_rewards/accuracy']:.3f}" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    margin = sum(r["chosen_score"] - r["rejected_score"] for r in rows) / len(rows)
    assert margin == pytest.approx(last["eval_rewards/margin"], abs=1e-4)


def _fake_run(tmp_path, tiny_dir, method: str) -> Path:
    """A LoRA run directory as `tunesmith train` leaves it for a causal-LM method (SFT, DPO)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.adapters import save_adapter

    run = tmp_path / method
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    save_adapter(model, run / "adapter")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": method, "model": {"path": str(tiny_dir)}}))
    return run


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_score_refuses_a_model_without_a_trained_head(method, tiny_dir, pref_data, tmp_path, capsys):
    """A causal LM loaded as a classifier gets a random head and scored "pairwise accuracy 0.359"; an SFT
    or DPO LoRA run crashed in PEFT. Both are refused, naming what is missing."""
    data = str(pref_data / "eval.jsonl")
    assert cli_main(["score", str(tiny_dir), data]) == 2
    err = capsys.readouterr().err
    assert "LlamaForCausalLM" in err and "method: reward" in err
    run = _fake_run(tmp_path, tiny_dir, method)
    assert cli_main(["score", str(run), data]) == 2
    assert f"is a `method: {method}` run: it has no trained score head" in capsys.readouterr().err
    assert cli_main(["score", str(run / "adapter"), data]) == 2
    assert "causal-LM adapter, not a reward model" in capsys.readouterr().err
