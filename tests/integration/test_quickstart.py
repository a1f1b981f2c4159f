"""`tunesmith quickstart` end to end with the small `test` budget: tiny model, pre-training, the
past-tense task, LoRA fine-tuning and the before/after evaluation, once per module.

What a user relies on: the adapter answers held-out prompts the base cannot, the numbers in the
report are the ones returned (and the eval loss is the one training logged), every documented file
is there, and the adapter loads with plain PEFT and answers as the report says.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch

from tunesmith import api
from tunesmith.errors import UserError
from tunesmith.quickstart import BUDGETS, run_quickstart
from tunesmith.train.metrics import read_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """(out, result, stdout) of one run with the `test` budget."""
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    threads = torch.get_num_threads()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_quickstart(out, budget="test")
    assert torch.get_num_threads() == threads  # the one-thread setting does not leak
    return out, result, stdout.getvalue()


def test_adapter_beats_the_base_on_held_out_prompts(quickstart):
    """The base has never seen the chat format or the task: 0%. The test budget was chosen so the
    adapter lands far above that (measured: see BUDGETS["test"]), so a margin of 30 points only
    fails when fine-tuning (or the evaluation) is broken, not on noise."""
    _, r, _ = quickstart
    b, a = r["before"], r["after"]
    assert r["n_eval"] == BUDGETS["test"].task_eval
    assert a["accuracy"] > b["accuracy"]
    assert a["accuracy"] - b["accuracy"] >= 0.3
    assert a["eval_loss"] < b["eval_loss"]


def test_files_are_all_there(quickstart):
    out, _, _ = quickstart
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "base-init", "data", "dpo", "pretrain", "sft", "sft-merged"]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["corpus.txt", "pref_eval.jsonl", "pref_train.jsonl",
                                                                "task_eval.jsonl", "task_train.jsonl"]
    for run in ("pretrain", "sft", "dpo"):
        assert (out / run / "loss.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / run / "config.yaml").is_file() and (out / run / "report.md").is_file()
    assert (out / "pretrain" / "model" / "model.safetensors").is_file()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "sft" / "adapter").iterdir()}
    assert "## Samples" in (out / "pretrain" / "report.md").read_text()


def test_held_out_rows_never_occur_in_training(quickstart):
    out, _, _ = quickstart
    rows = {name: [json.loads(line) for line in (out / "data" / f"task_{name}.jsonl").open()] for name in ("train", "eval")}
    assert len(rows["train"]) == BUDGETS["test"].task_train and len(rows["eval"]) == BUDGETS["test"].task_eval
    assert not {r["input"] for r in rows["train"]} & {r["input"] for r in rows["eval"]}


def test_report_shows_the_returned_numbers(quickstart):
    """sft/report.md has the before/after section with exactly the returned accuracies, and the
    after eval loss equals the eval loss the training loop logged last (same rows, same loss)."""
    out, r, _ = quickstart
    report = (out / "sft" / "report.md").read_text()
    section = report.split("## Before and after fine-tuning", 1)[1].split("\n## ", 1)[0]
    n = r["n_eval"]
    row = re.search(r"^\| exact match \| (.+?) \| (.+?) \|$", section, re.M)
    assert row is not None
    for cell, acc in zip(row.groups(), (r["before"]["accuracy"], r["after"]["accuracy"])):
        assert cell == f"{100 * acc:.1f}% ({round(acc * n)}/{n})"
    assert section.count("✓") + section.count("✗") == 6  # one mark per example row
    logged = [m["eval_loss"] for m in read_metrics(out / "sft" / "metrics.jsonl") if "eval_loss" in m]
    assert r["after"]["eval_loss"] == pytest.approx(logged[-1], rel=1e-4)
    readme = (out / "README.md").read_text()
    assert "sft/report.md" in readme and row.group(2) in readme


def test_summary_names_the_report_and_the_plots(quickstart):
    out, r, stdout = quickstart
    assert str(out / "sft" / "report.md") in stdout
    assert str(out / "sft" / "loss.png") in stdout and str(out / "pretrain" / "loss.png") in stdout
    assert f"{r['after']['accuracy']:.0%} after" in stdout
    assert set(r["timings_s"]) == {"model", "pretrain", "task", "sft", "evaluate", "dpo"}
    assert f"held-out preference accuracy {r['dpo']['before']['accuracy']:.0%} -> {r['dpo']['after']['accuracy']:.0%}" in stdout


def test_dpo_stage_reports_preference_accuracy_before_and_after(quickstart):
    """The DPO stage starts from the SFT model (its reference), trains a new adapter, and its report
    shows the held-out numbers the run returned; DPO widens the log-prob margin of the correct answer."""
    out, r, _ = quickstart
    d = r["dpo"]
    assert d["n_eval"] == BUDGETS["test"].dpo_eval
    assert d["after"]["mean_margin"] > d["before"]["mean_margin"]
    first = next(x for x in read_metrics(out / "dpo" / "metrics.jsonl") if "loss" in x)
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)  # the reference is the SFT model itself
    report = (out / "dpo" / "report.md").read_text()
    assert f"| preference accuracy | {100 * d['before']['accuracy']:.1f}% | {100 * d['after']['accuracy']:.1f}% |" in report
    assert (out / "dpo" / "preference.png").read_bytes()[:8] == PNG_MAGIC
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "dpo" / "adapter").iterdir()}


def test_plain_peft_reproduces_the_reported_answers(quickstart):
    """A fresh load of base + adapter with transformers and PEFT gives the same greedy answers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.evaluate.generation import greedy_answers

    out, r, _ = quickstart
    tok = AutoTokenizer.from_pretrained(out / "pretrain" / "model")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "pretrain" / "model"), out / "sft" / "adapter")
    examples = r["examples"][:8]
    prompts = [f"Rewrite the sentence in the past tense.\n\n{ex['prompt']}" for ex in examples]
    assert greedy_answers(model.eval(), tok, prompts) == [ex["after"] for ex in examples]


def test_a_second_run_needs_overwrite(quickstart):
    out, _, _ = quickstart
    with pytest.raises(UserError, match="--overwrite"):
        api.quickstart(out, tiny=True)
