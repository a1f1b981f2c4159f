"""LLM-as-judge: single-answer grading (1-10 against a rubric) and pairwise comparison with the
positions swapped, against any OpenAI-compatible chat endpoint or a local model.

The method and the output conventions (`Rating: [[7]]`, `[[A]]`/`[[B]]`/`[[C]]`) follow MT-Bench
(Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"): a judge prefers the
first position often enough to flip results, so every pair is judged twice, A/B then B/A, and only
a verdict that survives the swap counts as a win or a loss; anything else is a tie (and is counted
as inconsistent). The prompts are text files (`prompts/judge_*.txt`, or your own with
`--judge-prompts DIR`) with {question}, {answer} / {answer_a}, {answer_b} slots; every raw judge
output is kept in the records so a person can audit the judge.

The HTTP client is the standard library's: one POST per judgement, no SDK needed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError

PROMPTS = Path(__file__).parent / "prompts"


def load_prompt(kind: str, prompts_dir: str | Path | None = None) -> str:
    """The template `judge_<kind>.txt` from prompts_dir, else the built-in one."""
    path = Path(prompts_dir) / f"judge_{kind}.txt" if prompts_dir else PROMPTS / f"judge_{kind}.txt"
    if not path.is_file():
        raise UserError(f"judge prompt {path} not found; copy {PROMPTS / f'judge_{kind}.txt'} there and edit it")
    return path.read_text(encoding="utf-8")


class OpenAIJudge:
    """POSTs to {base_url}/chat/completions (OpenAI, vLLM, llama.cpp server, tunesmith serve...)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0,
                 max_tokens: int = 512):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.max_tokens = model, timeout_s, max_tokens
        self.key = os.environ.get(api_key_env, "")
        self.name = f"{model} at {base_url}"

    def __call__(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise UserError(f"judge endpoint {self.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise UserError(f"judge endpoint {self.url} is unreachable ({e}); check --judge-endpoint") from None
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"judge endpoint {self.url} did not answer like the OpenAI chat API: {str(data)[:200]}") from None


class LocalJudge:
    """A local causal LM as the judge (greedy, its chat template)."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 512, name: str = "local model"):
        self.model, self.tokenizer, self.max_new_tokens, self.name = model, tokenizer, max_new_tokens, name

    def __call__(self, prompt: str) -> str:
        from .generation import chat_prompt, generate

        return generate(self.model, self.tokenizer, [chat_prompt(self.tokenizer, prompt)], self.max_new_tokens)[0]


def parse_rating(text: str) -> float | None:
    """The last `[[N]]` (or `Rating: N`) with 1 <= N <= 10, else None."""
    found = re.findall(r"\[\[(\d+(?:\.\d+)?)\]\]", text) or re.findall(r"[Rr]ating:\s*\[?(\d+(?:\.\d+)?)", text)
    for raw in reversed(found):
        value = float(raw)
        if 1 <= value <= 10:
            return value
    return None


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'C' (tie) from the last [[A]]/[[B]]/[[C]], else None."""
    found = re.findall(r"\[\[([ABC])\]\]", text)
    return found[-1] if found else None


def grade_single(judge, questions: list[str], answers: list[str], template: str,
                 references: list[str] | None = None) -> dict:
    from ..console import progress_bar

    records = []
    for i, (q, a) in enumerate(progress_bar(list(zip(questions, answers)), desc="judge", leave=False)):
        ref = (references or [""] * len(questions))[i]
        prompt = template.format(question=q, answer=a,
                                 reference_note="Compare the response with the reference answer. " if ref else "",
                                 reference_block=f"\n[Reference Answer]\n{ref}\n" if ref else "")
        raw = judge(prompt)
        records.append({"question": q, "answer": a, "rating": parse_rating(raw), "judge_output": raw})
    rated = [r["rating"] for r in records if r["rating"] is not None]
    return {"scores": {"rating": sum(rated) / len(rated) if rated else float("nan"), "unparsed": len(records) - len(rated)},
            "n": len(records), "records": records}


def _outcome(first: str | None, second: str | None) -> str:
    """first: verdict with the model as A; second: with the model as B. Win/loss only if both agree."""
    g1 = {"A": "win", "B": "loss"}.get(first or "", "tie")
    g2 = {"B": "win", "A": "loss"}.get(second or "", "tie")
    return g1 if g1 == g2 else "tie"


def compare_pairwise(judge, questions: list[str], answers: list[str], base_answers: list[str], template: str) -> dict:
    """The model against the base on each question, judged in both orders."""
    from ..console import progress_bar

    records = []
    for q, mine, theirs in progress_bar(list(zip(questions, answers, base_answers)), desc="judge (pairs, both orders)", leave=False):
        raw1 = judge(template.format(question=q, answer_a=mine, answer_b=theirs))
        raw2 = judge(template.format(question=q, answer_a=theirs, answer_b=mine))
        v1, v2 = parse_verdict(raw1), parse_verdict(raw2)
        records.append({"question": q, "answer": mine, "base_answer": theirs, "verdict_model_first": v1,
                        "verdict_model_second": v2, "outcome": _outcome(v1, v2),
                        "consistent": _outcome(v1, v2) != "tie" or (v1 == "C" and v2 == "C"),
                        "judge_output_model_first": raw1, "judge_output_model_second": raw2})
    n = max(1, len(records))
    count = {k: sum(r["outcome"] == k for r in records) for k in ("win", "loss", "tie")}
    return {"scores": {"win_rate": count["win"] / n, "loss_rate": count["loss"] / n, "tie_rate": count["tie"] / n,
                       "inconsistent": sum(not r["consistent"] for r in records)},
            "n": len(records), "records": records}
