"""`method: reward | dpo | kto` end to end on the tiny model, fp32 on the CPU.

The data is the project's generated preference task (quickstart/preference_task.py): the chosen
answer puts the sentence in the past tense, the rejected one copies it unchanged; held-out pairs
use sentences never seen in training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main as cli_main
from tunesmith.quickstart.preference_task import kto_rows, past_tense_pairs
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration
PAIR_KEYS = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy", "logps/chosen", "logps/rejected"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pref")
    tr, ev = past_tense_pairs(96, 32, seed=1, copy_share=1.0)
    # 33 KTO eval rows: the last eval batch of 4 holds a single example.
    for name, rows in (("train.jsonl", tr), ("eval.jsonl", ev), ("kto.jsonl", kto_rows(tr)), ("kto_eval.jsonl", kto_rows(ev)[:33])):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _run(tiny_dir, data: Path, out: Path, method: str, *extra, resume=False, callbacks=None):
    train_file = data / ("kto.jsonl" if method == "kto" else "train.jsonl")
    ov = [f"model.path={tiny_dir}", f"data.train={train_file}", f"method={method}", "data.max_length=96",
          "dpo.max_prompt_length=48", "train.micro_batch_size=4", "train.precision=fp32", "train.progress=false",
          "train.lr=3e-3", "train.max_steps=4", "adapter.dropout=0", f"output_dir={out}", f"dpo.ref_cache_dir={out.parent / 'cache'}"]
    ov.append(f"data.eval={data / ('kto_eval.jsonl' if method == 'kto' else 'eval.jsonl')}")
    return train(None, ov + list(extra), overwrite=not resume, resume=resume, callbacks=callbacks)


@pytest.mark.parametrize("method, loss", [("dpo", "sigmoid"), ("dpo", "ipo"), ("dpo", "hinge"), ("dpo", "simpo"),
                                          ("dpo", "cpo"), ("dpo", "orpo"), ("kto", "sigmoid"), ("reward", "sigmoid")])
def test_each_method_trains_a_few_steps(tiny_dir, pref_data, tmp_path, method, loss):
    run_dir = tmp_path / f"{method}-{loss}"
    _run(tiny_dir, pref_data, run_dir, method, f"dpo.loss={loss}")
    records = read_metrics(run_dir / "metrics.jsonl")
    train_recs = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in train_recs)
    expected = {"loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "kl"} if method == "kto" else PAIR_KEYS
    if method == "reward":
        expected = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"}
    # (a KTO micro-batch may hold no undesirable example: its metric is then absent from that step)
    assert expected <= set().union(*train_recs)
    if method == "dpo" and loss == "sigmoid":
        assert train_recs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # LoRA: policy == reference at step 0
        assert train_recs[0]["rewards/margin"] == 0
    if method == "kto":
        assert train_recs[0]["loss"] == pytest.approx(0.5, abs=1e-6)  # 1 - σ(0) with r = z0 = 0
    final_eval = [r for r in records if "eval_loss" in r][-1]
    assert math.isfinite(final_eval["eval_loss"]) and "eval_rewards/chosen" in final_eval
    weights = load_file(str(run_dir / "adapter/adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: every one trained
    if method == "reward":
        assert any(".score." in k or k.endswith("score.weight") for k in weights)  # the scalar head is saved
    report = (run_dir / "report.md").read_text()
    assert "## Preference metrics" in report and (run_dir / "preference.png").is_file()


def test_reward_model_learns_the_task_and_scores_held_out_pairs(tiny_dir, pref_data, tmp_path, capsys):
    """Full fine-tuning: the new scalar head starts with near-equal scores (loss ~ ln 2, chance), the
    held-out pairwise accuracy ends >= 0.85, and `tunesmith score` on the saved model reproduces the
    run's final eval accuracy."""
    run_dir = tmp_path / "rm"
    _run(tiny_dir, pref_data, run_dir, "reward", "adapter.type=none", "train.lr=1e-3", "train.max_steps=16", "train.eval_every=4",
         "train.micro_batch_size=8")
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_rewards/accuracy" in r]
    first = next(r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r)
    assert first["loss"] == pytest.approx(math.log(2), abs=0.05)
    assert evals[-1]["eval_rewards/accuracy"] >= 0.85
    capsys.readouterr()
    out = tmp_path / "scores.jsonl"
    assert cli_main(["score", str(run_dir), str(pref_data / "eval.jsonl"), "--out", str(out)]) == 0
    assert f"pairwise accuracy {evals[-1]['eval_rewards/accuracy']:.3f}" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 32
    assert cli_main(["score", str(run_dir), str(pref_data / "eval.jsonl"), "--out", str(out)]) == 2  # no clobbering


def test_full_dpo_precomputed_reference_equals_frozen_copy_and_is_cached(tiny_dir, pref_data, tmp_path, capsys):
    """Full fine-tuning: reference log-probs computed once and cached give the same losses as a
    frozen copy of the model; a second run reads the cache instead of recomputing."""
    frozen = tmp_path / "frozen"
    _run(tiny_dir, pref_data, frozen, "dpo", "adapter.type=none", "train.lr=1e-3")
    capsys.readouterr()
    pre = tmp_path / "pre"
    _run(tiny_dir, pref_data, pre, "dpo", "adapter.type=none", "train.lr=1e-3", "dpo.precompute_ref=true")
    assert "computed and cached" in capsys.readouterr().err
    lf = [r["loss"] for r in read_metrics(frozen / "metrics.jsonl") if "loss" in r]
    lp = [r["loss"] for r in read_metrics(pre / "metrics.jsonl") if "loss" in r]
    assert lf[0] == pytest.approx(math.log(2), abs=1e-6)
    assert lp == pytest.approx(lf, abs=1e-5)
    _run(tiny_dir, pref_data, tmp_path / "pre2", "dpo", "adapter.type=none", "train.lr=1e-3", "dpo.precompute_ref=true")
    assert "read from the cache" in capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "ref-logps").glob("*.safetensors"))) == 1


class _Crash(Exception):
    pass


def test_dpo_resume_reproduces_the_run(tiny_dir, pref_data, tmp_path):
    """A LoRA DPO run stopped after step 5 (checkpoint at 4) and resumed gives the same losses and
    adapter as the run straight through."""
    common = ("train.max_steps=8", "train.save_every=2", "train.warmup_steps=2")
    straight = tmp_path / "straight"
    _run(tiny_dir, pref_data, straight, "dpo", *common)

    def crash(step, record):
        if step == 5:
            raise _Crash

    resumed = tmp_path / "resumed"
    with pytest.raises(_Crash):
        _run(tiny_dir, pref_data, resumed, "dpo", *common, callbacks=[crash])
    _run(tiny_dir, pref_data, resumed, "dpo", *common, resume=True)
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in b if "loss" in r] == list(range(1, 9))
    assert [r["loss"] for r in a if "loss" in r] == [r["loss"] for r in b if "loss" in r]
    wa = load_file(str(straight / "adapter/adapter_model.safetensors"))
    wb = load_file(str(resumed / "adapter/adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dpo_improves_held_out_preference_accuracy(tiny_dir, pref_data, tmp_path):
    run_dir = tmp_path / "dpo"
    _run(tiny_dir, pref_data, run_dir, "dpo", "train.max_steps=12", "train.eval_every=4", "train.micro_batch_size=8")
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_rewards/accuracy" in r]
    assert evals[-1]["eval_rewards/accuracy"] >= 0.8
    assert evals[-1]["eval_rewards/margin"] > 0
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < losses[0]
