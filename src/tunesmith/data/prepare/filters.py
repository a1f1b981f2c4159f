"""Quality filters on the responses of each row.

Each check is a small pure function `text -> reason | None`, so each is unit-tested on its own;
`QualityFilter` runs them in order and drops a row at its first failing response. Lengths are in
tokens of the target tokenizer (`TokenCounter`), counted in batches (one fast-tokenizer call per chunk).
"""

from __future__ import annotations

import json
import re

from ...config import PrepareFiltersConfig
from ...errors import ConfigError
from .records import Record, responses
from .steps import StepReport

PLACEHOLDERS = frozenset({
    "n/a", "na", "n.a.", "none", "null", "nil", "nan", "unknown", "todo", "tbd", "tba", "-", "--", "...", "?",
    "i don't know", "i do not know", "i dont know", "idk", "no answer", "not sure", "i'm not sure", "i am not sure",
    "no comment", "see above", "same as above", "answer", "response", "output", "placeholder", "lorem ipsum",
    "<answer>", "[answer]", "insert answer here", "your answer here",
})
_DANGLING = frozenset({"the", "a", "an", "and", "or", "of", "to", "with", "for", "in", "on", "that", "is", "are", "but", "because", "which", "as", "at", "by", "from", "if", "my", "your", "their", "this"})
_WORD = re.compile(r"\w+", re.UNICODE)
_JSON_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.S | re.I)


class TokenCounter:
    """Token counts from the target tokenizer, or whitespace words when there is none."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.unit = "tokens" if tokenizer is not None else "words"

    def __call__(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.tokenizer is None:
            return [len(t.split()) for t in texts]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def is_placeholder(text: str) -> bool:
    return text.strip().strip(".!").lower().replace("\u2019", "'") in PLACEHOLDERS or text.strip().lower() in PLACEHOLDERS


def repeat_ratio(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for all-distinct, -> 1 for a loop.

    "a b c a b c a b c" has 3-grams abc bca cab abc bca cab abc: 7, 3 distinct -> 4/7 = 0.571.
    Texts with fewer than 2n words are too short to judge and score 0.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 2 * n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def looks_truncated(text: str) -> str | None:
    """Why the text looks cut off, or None: an unclosed code fence, or it ends mid-sentence."""
    t = text.rstrip()
    if t.count("```") % 2 == 1:
        return "unclosed ``` code fence"
    if t.endswith((",", ":", ";", "-", "(", "[", "{")) and not t.endswith(("--", ":-")):
        return f"ends with '{t[-1]}'"
    last = _WORD.findall(t[-30:])
    if last and t[-1].isalpha() and last[-1].lower() in _DANGLING and len(t.split()) > 3:
        return f"ends with the word '{last[-1]}'"
    return None


def json_problem(text: str) -> str | None:
    m = _JSON_FENCE.match(text.strip())
    try:
        json.loads(m.group(1) if m else text)
    except json.JSONDecodeError as e:
        return f"{e.msg} at line {e.lineno} column {e.colno}"
    return None


def _language_detector(languages: list[str]):
    if not languages:
        return None
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise ConfigError("`prepare.filters.languages` needs a language detector: pip install langdetect (or set it to [])") from None
    DetectorFactory.seed = 0  # langdetect is random without it

    def detect_lang(text: str) -> str:
        try:
            return detect(text)
        except LangDetectException:
            return "unknown"

    return detect_lang


def _judged(rec: Record, n: int) -> list[bool]:
    """Which responses the quality checks judge: a rejected reply or an undesirable KTO completion is
    meant to be bad (HH's rejected replies are often cut off), so those are only checked for being empty."""
    if rec.kind == "preference":
        return [True] + [False] * (n - 1)
    if rec.kind == "kto":
        return [bool(rec.data.get("label"))] * n
    return [True] * n


class QualityFilter:
    name = "quality filters"

    def __init__(self, cfg: PrepareFiltersConfig, counter: TokenCounter):
        self.cfg, self.count = cfg, counter
        self.detect = _language_detector(cfg.languages)
        self.report = StepReport(self.name)
        self.report.notes.append(f"lengths in {counter.unit}")

    def __call__(self, records: list[Record]) -> list[Record]:
        per_row = [responses(r) for r in records]
        flat = [t for rs in per_row for t in rs]
        lengths = iter(self.count(flat) if (self.cfg.min_response_tokens or self.cfg.max_response_tokens) else [0] * len(flat))
        kept = []
        self.report.rows_in += len(records)
        for rec, texts in zip(records, per_row):
            reasons = [self._check(t, n) if full else (("empty response", "") if not t.strip() else None)
                       for t, n, full in zip(texts, [next(lengths) for _ in texts], _judged(rec, len(texts)))]
            if rec.kind == "preference" and len(texts) == 2 and texts[0].strip() == texts[1].strip():
                reasons.append(("chosen equals rejected", texts[0]))
            bad = next((r for r in reasons if r is not None), None)
            if bad is None:
                kept.append(rec)
            else:
                self.report.drop(bad[0], rec.where, bad[1])
        self.report.rows_out += len(kept)
        return kept

    def _check(self, text: str, n_tokens: int) -> tuple[str, str] | None:
        c, unit = self.cfg, self.count.unit
        if not text.strip():
            return "empty response", ""
        if c.min_response_tokens and n_tokens < c.min_response_tokens:
            return f"response shorter than {c.min_response_tokens} {unit}", text
        if c.max_response_tokens and n_tokens > c.max_response_tokens:
            return f"response longer than {c.max_response_tokens} {unit}", f"{n_tokens} {unit}: {text}"
        if c.placeholders and is_placeholder(text):
            return "placeholder response", text
        if c.max_repeat_ratio < 1.0 and (r := repeat_ratio(text, c.repeat_ngram)) > c.max_repeat_ratio:
            return f"repeated {c.repeat_ngram}-grams over {c.max_repeat_ratio:.0%}", f"{r:.0%}: {text}"
        if c.truncated and (why := looks_truncated(text)):
            return "truncated response", f"{why}: ...{text[-80:]}"
        if c.json_output and (why := json_problem(text)):
            return "invalid JSON output", f"{why}: {text}"
        if self.detect is not None and (lang := self.detect(text)) not in c.languages:
            return f"language not in {c.languages}", f"{lang}: {text}"
        return None

