"""Task readers for the common benchmark formats, the YAML task format, and training signals: each
reader on a tiny hand-written file, and bad input named by file:line with the fix."""

import json

import pytest

from tunesmith.errors import ConfigError, DataError, UserError
from tunesmith.evaluate.signals import training_signals
from tunesmith.evaluate.tasks import load_task, parse_tasks


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_reader(tmp_path):
    f = _jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "q", "answer": "x\n#### 1,000"}])
    t = load_task("gsm8k", f)
    assert (t.kind, t.metric, t.extract) == ("generate", "exact_match", "gsm8k")
    assert [e.target for e in t.examples] == ["2", "1,000"]
    assert t.examples[0].prompt == "Question: 1+1?\nAnswer:"
    assert len(load_task("gsm8k_small", f, limit=1).examples) == 1
    shot = load_task("gsm8k", f, few_shot=1)
    assert [e.target for e in shot.shots] == ["2"] and [e.target for e in shot.examples] == ["1,000"]
    _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*####"):
        load_task("gsm8k", tmp_path / "bad.jsonl")


def test_humaneval_reader(tmp_path):
    f = _jsonl(tmp_path / "h.jsonl", [{"task_id": "T/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}])
    t = load_task("humaneval", f)
    assert t.metric == "pass_at_k" and t.examples[0].tests.endswith("check(f)\n") and t.examples[0].target == "f"


@pytest.mark.parametrize("header", [True, False])
def test_mmlu_csv_with_and_without_header(tmp_path, header):
    lines = (["question,A,B,C,D,answer"] if header else []) + ["What is 2+2?,3,4,5,6,B", '"Pick, one",x,y,z,w,D']
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    t = load_task("mmlu", tmp_path / "m.csv")
    assert [e.gold for e in t.examples] == [1, 3]
    assert t.examples[0].prompt == "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    assert t.examples[0].choices == [" A", " B", " C", " D"]


def test_mmlu_bad_answer_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(DataError, match=r"m.csv:1: answer 'E' is not one of A, B, C, D"):
        load_task("mmlu", tmp_path / "m.csv")


def test_arc_both_layouts_hellaswag_and_mc(tmp_path):
    orig = {"question": {"stem": "Sky?", "choices": [{"text": "blue", "label": "A"}, {"text": "red", "label": "B"}]}, "answerKey": "A"}
    hf = {"question": "Sky?", "choices": {"text": ["red", "blue"], "label": ["1", "2"]}, "answerKey": "2"}
    t = load_task("arc_easy", _jsonl(tmp_path / "a.jsonl", [orig, hf]))
    assert [e.gold for e in t.examples] == [0, 1] and t.examples[0].choices == [" blue", " red"]
    h = load_task("hellaswag", _jsonl(tmp_path / "h.jsonl", [{"ctx": "He ran", "endings": ["fast", "slow", "up"], "label": "2"}]))
    assert h.examples[0].gold == 2 and h.examples[0].prompt == "He ran"
    m = load_task("mc", _jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["x", "y"], "answer": 1}]))
    assert m.examples[0].gold == 1
    _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "choices": ["x", "y"], "answer": 5}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: answer index 5 is out of range"):
        load_task("mc", tmp_path / "bad.jsonl")


def test_yaml_task_with_few_shot_and_errors(tmp_path):
    _jsonl(tmp_path / "d.jsonl", [{"q": f"q{i}", "a": f"a{i}", "schema": {"type": "object"}} for i in range(5)])
    (tmp_path / "t.yaml").write_text("data: d.jsonl\ntype: generate\nmetric: json\nprompt: 'Q: {q}'\ntarget: '{a}'\n"
                                     "few_shot: 2\nschema_field: schema\n")
    t = load_task("js", tmp_path / "t.yaml")
    assert t.name == "js" and len(t.shots) == 2 and len(t.examples) == 3  # the shots are not scored
    assert t.examples[0].prompt == "Q: q2" and t.examples[0].schema == {"type": "object"}
    (tmp_path / "typo.yaml").write_text("data: d.jsonl\ntype: generate\nmetric: json\nprompt: 'Q: {q}'\nfewshot: 2\n")
    with pytest.raises(ConfigError, match="`fewshot` is not a config key; did you mean `few_shot`"):
        load_task("x", tmp_path / "typo.yaml")
    (tmp_path / "field.yaml").write_text("data: d.jsonl\ntype: generate\nmetric: rouge_l\nprompt: 'Q: {question}'\n")
    with pytest.raises(DataError, match=r"d.jsonl:1: the task's `prompt` template uses 'question'"):
        load_task("x", tmp_path / "field.yaml")
    (tmp_path / "mix.yaml").write_text("data: d.jsonl\ntype: multiple_choice\nmetric: rouge_l\nprompt: '{q}'\n")
    with pytest.raises(UserError, match="does not go with `type: multiple_choice`"):
        load_task("x", tmp_path / "mix.yaml")


def test_task_names_and_files_are_checked(tmp_path):
    assert parse_tasks("gsm8k=a.jsonl, mc=b.jsonl") == {"gsm8k": "a.jsonl", "mc": "b.jsonl"}
    with pytest.raises(UserError, match="not NAME=FILE"):
        parse_tasks("gsm8k")
    with pytest.raises(UserError, match="given twice"):
        parse_tasks("a=x,a=y")
    with pytest.raises(UserError, match="no such file"):
        load_task("gsm8k", tmp_path / "missing.jsonl")
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="no built-in reader for 'trivia'"):
        load_task("trivia", tmp_path / "x.jsonl")


def _metrics(path, evals, losses):
    rows = [{"step": s, "loss": l} for s, l in losses] + [{"step": s, "eval_loss": v} for s, v in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])))


def test_training_signals_detect_overfitting_and_best_checkpoint(tmp_path):
    """Eval loss 2.0, 1.5, 1.8 at steps 10, 20, 30 while train loss falls: best at 20, last is
    20 % above it (> 2 %) and train loss went down -> overfitting; checkpoints 10 and 30 are on
    disk (20 was pruned), so the best one on disk is step 30 (1.8 < 2.0)."""
    _metrics(tmp_path, [(10, 2.0), (20, 1.5), (30, 1.8)], [(s, 3.0 - 0.05 * s) for s in range(1, 31)])
    for s in (10, 30):
        (tmp_path / "checkpoints" / f"step-{s}").mkdir(parents=True)
    sig = training_signals(tmp_path)
    assert (sig["best_eval_step"], sig["best_eval_loss"], sig["last_eval_loss"]) == (20, 1.5, 1.8)
    assert sig["overfitting"] is True
    assert sig["best_checkpoint"]["step"] == 30


def test_training_signals_quiet_when_eval_keeps_falling(tmp_path):
    _metrics(tmp_path, [(10, 2.0), (20, 1.5), (30, 1.4)], [(s, 3.0 - 0.05 * s) for s in range(1, 31)])
    sig = training_signals(tmp_path)
    assert sig["overfitting"] is False and sig["best_eval_step"] == 30 and "best_checkpoint" not in sig
    assert training_signals(tmp_path / "nothing") is None


def test_example_task_files_load():
    """The task YAMLs under examples/eval/ stay valid."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "eval"
    s = load_task("summaries", root / "summaries.yaml")
    assert (s.metric, len(s.shots), len(s.examples)) == ("rouge_l", 2, 2)
    j = load_task("extract_json", root / "extract_json.yaml")
    assert j.metric == "json" and all(e.schema["required"] == ["name", "age"] for e in j.examples)
