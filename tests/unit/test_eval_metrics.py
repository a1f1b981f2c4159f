"""Eval metrics on hand-made examples: answer extraction edge cases, exact match, ROUGE-L, JSON and
schema checks, pass@k against its closed form, choice accuracy, and before/after regression flags."""

import math

import pytest

from tunesmith.evaluate import metrics as M
from tunesmith.evaluate.compare import compare


@pytest.mark.parametrize("text, expected", [
    ("She sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),  # the marked answer, not the last number before it
    ("#### 1,234", "1234"),  # thousands separator
    ("####72", "72"),  # no space after the marker
    ("#### $5.", "5"),  # currency sign and a full stop
    ("#### -3.50", "-3.5"),  # sign and trailing zero
    ("first #### 4 then corrected #### 5", "5"),  # the last marker wins
    ("So the total is 42 dollars.", "42"),  # no marker: lm-eval's flexible fallback, the last number
    ("It costs 1,000.00 in total", "1000"),
    ("I do not know.", None),  # nothing to extract
    ("#### seven", None),  # a marker without a number and no number anywhere
])
def test_gsm8k_extraction(text, expected):
    assert M.extract_answer(text, "gsm8k") == expected


def test_other_extractions():
    assert M.extract_answer("a 1 b 2.0", "last_number") == "2"
    assert M.extract_answer("The answer is (C).", r"regex:\(([A-D])\)") == "C"
    assert M.extract_answer("no letter", r"regex:\(([A-D])\)") is None
    assert M.extract_answer("  keep me \n", "none") == "keep me"
    with pytest.raises(ValueError, match="unknown answer extraction"):
        M.extract_answer("x", "fancy")


def test_answers_match_numbers_by_value_and_strings_exactly():
    assert M.answers_match("72.0", "72") and M.answers_match("1,000", "1000")
    assert not M.answers_match("72", "27") and not M.answers_match(None, "72")
    assert M.answers_match("Paris", " Paris ") and not M.answers_match("paris", "Paris")


def test_rouge_l_by_hand():
    """pred 'the cat sat on the mat' (6 words), ref 'the cat is on the mat' (6 words):
    LCS = 'the cat on the mat' = 5, P = R = 5/6, F1 = 5/6."""
    assert M.rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # pred 'a b' vs ref 'a x b y': LCS 2, P = 1, R = 0.5, F = 2*0.5/1.5 = 2/3
    assert M.rouge_l("a b", "a x b y") == pytest.approx(2 / 3)
    assert M.rouge_l("nothing shared", "at all") == 0.0
    assert M.rouge_l("", "") == 1.0 and M.rouge_l("", "x") == 0.0


def test_json_validity_and_schema_match():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    assert M.json_scores('{"name": "Ann", "age": 3}', schema) == {"json_valid": 1.0, "schema_match": 1.0}
    assert M.json_scores('Here:\n```json\n{"name": "Ann", "age": 3}\n```', schema) == {"json_valid": 1.0, "schema_match": 1.0}
    assert M.json_scores('{"name": "Ann", "age": "three"}', schema) == {"json_valid": 1.0, "schema_match": 0.0}
    assert M.json_scores('{"name": "Ann", "age": 3', schema) == {"json_valid": 0.0, "schema_match": 0.0}
    assert M.json_scores("[1, 2]") == {"json_valid": 1.0}


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_pass_at_k_equals_closed_form(n):
    """The product form must equal 1 - C(n-c, k)/C(n, k) for every c and k <= n."""
    for c in range(n + 1):
        for k in range(1, n + 1):
            closed = 1.0 - (math.comb(n - c, k) / math.comb(n, k))
            assert M.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12), (n, c, k)


def test_pass_at_k_by_hand_and_errors():
    # n = 5, c = 2, k = 2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7; k = 1 is c/n = 0.4
    assert M.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert M.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least 3 samples"):
        M.pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        M.pass_at_k(2, 3, 1)


def test_choice_accuracy_plain_and_length_normalised():
    """Choices ' a' (2 bytes, log p -2) and ' abcdefgh' (9 bytes, log p -3): acc picks the first
    (-2 > -3); acc_norm compares -1.0 and -0.333 and picks the second, the gold one."""
    s = M.choice_accuracy([-2.0, -3.0], [" a", " abcdefgh"], gold=1)
    assert s == {"acc": 0.0, "acc_norm": 1.0}


def test_exact_match_strips_whitespace_only():
    assert M.exact_match([" x\n", "X"], ["x", "x"]) == 0.5


def test_compare_flags_regressions_by_direction():
    """acc 0.50 -> 0.45 is 5 points down (> 2): regression; acc_norm 0.50 -> 0.49 is within the
    threshold; perplexity 10 -> 10.5 is 5 % worse: regression; loss 2.0 -> 1.0 is better."""
    after = {"t": {"acc": 0.45, "acc_norm": 0.49}, "p": {"perplexity": 10.5, "loss": 1.0}, "only_model": {"acc": 1.0}}
    before = {"t": {"acc": 0.50, "acc_norm": 0.50}, "p": {"perplexity": 10.0, "loss": 2.0}}
    rows = {(r["task"], r["metric"]): r for r in compare(after, before, threshold=0.02)}
    assert set(rows) == {("t", "acc"), ("t", "acc_norm"), ("p", "perplexity"), ("p", "loss")}
    assert rows["t", "acc"]["regression"] and rows["t", "acc"]["delta"] == pytest.approx(-0.05)
    assert not rows["t", "acc_norm"]["regression"] and not rows["t", "acc_norm"]["better"]
    assert rows["p", "perplexity"]["regression"]
    assert rows["p", "loss"]["better"] and not rows["p", "loss"]["regression"]


def test_extraction_agrees_with_openais_labels_on_real_gsm8k_solutions():
    """GSM8K's example_model_solutions.jsonl (../shared; skipped without it) holds 4 model solutions
    per test question with OpenAI's is_correct flag: extracting the final number from solution and
    ground truth and comparing them must reproduce every flag (5,276 of 5,276)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    n = agree = 0
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        gold = M.extract_answer(row["ground_truth"], "last_number")
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            pred = M.extract_answer(row[key]["solution"], "gsm8k")
            agree += M.answers_match(pred, gold) == row[key]["is_correct"]
            n += 1
    assert n == 5276 and agree == n
