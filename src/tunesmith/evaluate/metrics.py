"""Metrics on single predictions: answer extraction, exact match, ROUGE-L, JSON validity / schema
match, pass@k, and multiple-choice accuracy from log-likelihoods.

Written here rather than pulled in: ROUGE-L is one LCS (the `rouge_score` package brings nltk and
absl for it), answer extraction follows the GSM8K convention (`#### <number>`, lm-eval's "strict"
filter) with lm-eval's "flexible" fallback (the last number in the text), and pass@k is the
three-line unbiased estimator of the Codex paper. Schema checks use `jsonschema`, the reference
implementation of JSON Schema.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

import numpy as np

_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_HASHES = re.compile(r"####\s*(-?\$?\s?[\d,]*\.?\d+)")


def exact_match(predictions: list[str], targets: list[str]) -> float:
    """Fraction of predictions equal to their target once surrounding whitespace is stripped."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / max(1, len(targets))


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '$72' -> '72', '-3.' -> '-3'; None when it is not a number."""
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    d = d.normalize()
    out = format(d, "f")
    return "0" if out in ("-0", "0") else out


def extract_answer(text: str, how: str = "gsm8k") -> str | None:
    """The final answer in a generation.

    gsm8k: the number after the last `####`, else the last number in the text (None when none).
    last_number: the last number. regex:PATTERN: group 1 of the last match (else group 0).
    none: the stripped text.
    """
    if how == "none":
        return text.strip()
    if how.startswith("regex:"):
        found = list(re.finditer(how[len("regex:"):], text))
        if not found:
            return None
        m = found[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip()
    if how == "gsm8k":
        marked = _HASHES.findall(text)
        if marked:
            return normalize_number(marked[-1])
    elif how != "last_number":
        raise ValueError(f"unknown answer extraction {how!r}: use gsm8k, last_number, regex:PATTERN or none")
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def answers_match(prediction: str | None, target: str) -> bool:
    """Equal as numbers when both are numbers (72 == 72.0 == 72.00), else as stripped strings."""
    if prediction is None:
        return False
    a, b = normalize_number(prediction), normalize_number(target)
    if a is not None and b is not None:
        return a == b
    return prediction.strip() == target.strip()


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004, sec. 3.1, beta = 1): LCS over lower-cased word tokens.
    P = LCS/len(pred), R = LCS/len(ref), F = 2PR/(P+R)."""
    p, r = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def parse_json(text: str):
    """The JSON value in a generation (a ```json fenced block first, else the whole stripped text);
    raises ValueError when it does not parse."""
    m = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.S)
    body = (m.group(1) if m else text).strip()
    return json.loads(body)


def json_scores(text: str, schema: dict | None = None) -> dict[str, float]:
    """{'json_valid': 1/0, 'schema_match': 1/0 (only when a schema is given)}."""
    try:
        value = parse_json(text)
    except ValueError:
        return {"json_valid": 0.0, **({"schema_match": 0.0} if schema is not None else {})}
    out = {"json_valid": 1.0}
    if schema is not None:
        import jsonschema

        out["schema_match"] = float(jsonschema.Draft202012Validator(schema).is_valid(value))
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1):
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) for numerical stability."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def choice_accuracy(logprobs: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """acc: argmax of sum log p(choice); acc_norm: argmax of log p / len(choice in characters), as lm-eval."""
    acc = float(int(np.argmax(logprobs)) == gold)
    normed = [lp / max(1, len(c)) for lp, c in zip(logprobs, choices)]
    return {"acc": acc, "acc_norm": float(int(np.argmax(normed)) == gold)}
