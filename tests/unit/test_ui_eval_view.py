"""The Eval page's backend over a directory written by the eval's own writer: the before/after
table marks regressions by `compare`'s rule, samples page in model/base pairs, judge verdicts
group by question, and a missing or damaged results.json says which file and what to do."""

from __future__ import annotations

import json
import math

import pytest

from tunesmith.errors import UserError
from tunesmith.evaluate.compare import compare, side_scores
from tunesmith.evaluate.report import write_outputs
from tunesmith.ui.eval_view import PAGE_MAX, EvalView, load_results


def _records(n: int, right: int, side: str) -> list[dict]:
    return [{"id": i, "prompt": f"Q{i}?", "answer": f"{side} answer {i}", "target": str(i),
             "exact_match": float(i < right)} for i in range(n)]


def _results(judge: str = "single") -> dict:
    """Scores chosen so each kind of row appears (threshold 0.02):
    gsm8k exact_match 0.40 vs base 0.50: -0.10 < -0.02, a regression;
    ppl:notes perplexity 10.5 vs 10.0: +5 % > 2 %, a regression (lower is better);
    arc acc 0.61 vs 0.60: better; rouge 0.59 vs 0.60: -0.01, neither;
    judge rating 7.0 vs 6.5: better."""
    model = {"gsm8k": {"name": "gsm8k", "metric": "exact_match", "source": "g.jsonl", "n": 30,
                       "scores": {"exact_match": 0.4}, "records": _records(30, 12, "model")},
             "ppl:notes": {"name": "ppl:notes", "metric": "perplexity", "source": "notes.jsonl", "n": 900,
                           "scores": {"loss": math.log(10.5), "perplexity": 10.5}, "records": []},
             "arc": {"name": "arc", "metric": "acc", "source": "arc.jsonl", "n": 5, "scores": {"acc": 0.61}, "records": []},
             "rouge": {"name": "rouge", "metric": "rouge_l", "source": "r.jsonl", "n": 5, "scores": {"rouge_l": 0.59}, "records": []},
             "extra": {"name": "extra", "metric": "acc", "source": "x.jsonl", "n": 5, "scores": {"acc": 0.3}, "records": []}}
    base = {"gsm8k": {**model["gsm8k"], "scores": {"exact_match": 0.5}, "records": _records(30, 15, "base")},
            "ppl:notes": {**model["ppl:notes"], "scores": {"loss": math.log(10.0), "perplexity": 10.0}},
            "arc": {**model["arc"], "scores": {"acc": 0.6}}, "rouge": {**model["rouge"], "scores": {"rouge_l": 0.6}}}
    out = {"model": {"label": "model", "path": "base-dir", "adapter": "run/adapter"},
           "base": {"label": "base", "path": "base-dir", "adapter": ""},
           "config": {"regression_threshold": 0.02}, "results": {"model": model, "base": base}}
    if judge == "single":
        out["judge"] = {"judge": "j", "mode": "single",
                        "model": {"scores": {"rating": 7.0, "unparsed": 0}, "n": 2, "records": [
                            {"question": "A?", "answer": "ma", "rating": 8.0, "judge_output": "[[8]]"},
                            {"question": "B?", "answer": "mb", "rating": 6.0, "judge_output": "[[6]]"}]},
                        "base": {"scores": {"rating": 6.5, "unparsed": 0}, "n": 2, "records": [
                            {"question": "A?", "answer": "ba", "rating": 7.0, "judge_output": "[[7]]"},
                            {"question": "B?", "answer": "bb", "rating": 6.0, "judge_output": "[[6]]"}]}}
    out["comparison"] = compare(side_scores(out, "model"), side_scores(out, "base"), 0.02)
    return out


@pytest.fixture
def eval_dir(tmp_path):
    d = tmp_path / "eval"
    d.mkdir()
    write_outputs(d, _results())
    return d


def test_table_marks_regressions_by_the_evals_rule(eval_dir):
    t = EvalView(eval_dir).table()
    by = {(r["task"], r["metric"]): r for r in t["rows"]}
    assert {k for k, r in by.items() if r["regression"]} == {("gsm8k", "exact_match"), ("ppl:notes", "perplexity"), ("ppl:notes", "loss")}
    assert by[("arc", "acc")]["better"] and not by[("arc", "acc")]["regression"]
    assert not by[("rouge", "rouge_l")]["better"] and not by[("rouge", "rouge_l")]["regression"]
    assert by[("judge", "rating")]["better"] and by[("gsm8k", "exact_match")]["delta"] == pytest.approx(-0.1)
    # the same rows report.md was written from
    saved = json.loads((eval_dir / "results.json").read_text())["comparison"]
    assert [(r["task"], r["metric"], r["regression"]) for r in saved] == [(r["task"], r["metric"], r["regression"]) for r in t["rows"]]
    assert t["regressions"] == 3 and t["unpaired"] == [{"task": "extra", "metric": "acc", "model": 0.3, "base": None}]


def test_threshold_can_be_loosened(eval_dir):
    t = EvalView(eval_dir).table(threshold=0.2)  # 10 points and 5 % are inside 20 %
    assert t["regressions"] == 0 and t["threshold"] == 0.2
    with pytest.raises(UserError, match="must be >= 0"):
        EvalView(eval_dir).table(threshold=-1)


def test_without_a_base_there_is_nothing_to_compare(tmp_path):
    r = _results(judge="none")
    r["base"], r["comparison"] = None, None
    del r["results"]["base"]
    write_outputs(tmp_path, r)
    t = EvalView(tmp_path).table()
    assert t["rows"] == [] and t["regressions"] == 0 and {x["task"] for x in t["unpaired"]} == set(r["results"]["model"])


def test_samples_page_in_model_base_pairs(eval_dir):
    v = EvalView(eval_dir)
    assert [x["task"] for x in v.tasks()] == ["gsm8k"] and v.tasks()[0]["sides"] == ["model", "base"]
    page = v.samples("gsm8k", offset=10, limit=5)
    assert page["total"] == 30 and [r["index"] for r in page["rows"]] == [10, 11, 12, 13, 14]
    row = page["rows"][2]  # example 12: the base got it (12 < 15), the model did not (12 >= 12)
    assert row["model"]["answer"] == "model answer 12" and row["model"]["exact_match"] == 0.0
    assert row["base"]["answer"] == "base answer 12" and row["base"]["exact_match"] == 1.0
    assert len(v.samples("gsm8k", 0, 10_000)["rows"]) == min(30, PAGE_MAX)
    assert v.samples("gsm8k", 30, 5)["rows"] == []
    with pytest.raises(UserError, match="task 'nope' is not in .*results.json; tasks: gsm8k"):
        v.samples("nope")


def test_judge_verdicts_by_question(eval_dir):
    j = EvalView(eval_dir).judge()
    assert j["ran"] and j["mode"] == "single" and j["total"] == 2
    first = j["rows"][0]
    assert first["question"] == "A?" and first["model"]["rating"] == 8.0 and first["base"]["rating"] == 7.0
    assert j["scores"]["model"]["rating"] == 7.0


def test_missing_results_json(tmp_path):
    with pytest.raises(UserError, match=r"results.json: missing.*--overwrite"):
        load_results(tmp_path)
    with pytest.raises(UserError, match="no such directory"):
        load_results(tmp_path / "nope")


def test_corrupt_results_json(eval_dir):
    (eval_dir / "results.json").write_text('{"results": {"model": ')
    with pytest.raises(UserError, match=r"eval/results.json: not readable JSON"):
        load_results(eval_dir)
    (eval_dir / "results.json").write_text('{"scores": 1}')
    with pytest.raises(UserError, match="has no `results.model` scores"):
        load_results(eval_dir)
    (eval_dir / "results.json").write_text('{"results": {"model": {"t": {"n": 1}}}}')
    with pytest.raises(UserError, match=r"`results.model.t` has no `scores`"):
        load_results(eval_dir)


def test_damaged_sample_line_names_file_and_line(eval_dir):
    path = eval_dir / "samples" / "model-gsm8k.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = "{broken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"model-gsm8k.jsonl:4: not a JSON line"):
        EvalView(eval_dir).samples("gsm8k", 0, 10)
