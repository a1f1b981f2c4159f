"""`prepare:` — data hygiene before training (`tunesmith prepare`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import _Section


class PrepareNormalizeConfig(_Section):
    unicode: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form applied to every text field (NFKC also folds look-alike characters).")
    whitespace: bool = Field(True, description="Drop zero-width characters and trailing spaces, turn \\r\\n into \\n, keep at most one blank line.")


class PrepareFiltersConfig(_Section):
    min_response_tokens: int = Field(1, ge=0, description="Drop rows whose shortest response has fewer tokens (target tokenizer); 0 = off.")
    max_response_tokens: int = Field(0, ge=0, description="Drop rows whose longest response has more tokens; 0 = off.")
    placeholders: bool = Field(True, description="Drop responses that are only a placeholder ('N/A', 'I don't know', 'TODO', ...).")
    max_repeat_ratio: float = Field(0.5, gt=0.0, le=1.0, description="Drop responses whose share of repeated word n-grams exceeds this; 1.0 = off.")
    repeat_ngram: int = Field(3, ge=1, description="n of the n-grams the repetition ratio counts.")
    truncated: bool = Field(True, description="Drop responses that look cut off (unclosed ``` fence, ending on ',' or a dangling word such as 'the').")
    json_output: bool = Field(False, description="The task's output is JSON: drop responses that do not parse (a ```json fence is allowed).")
    languages: list[str] = Field(default_factory=list, description="Keep only responses in these ISO 639-1 languages (needs `pip install langdetect`); empty = off.")


class PrepareDedupConfig(_Section):
    exact: bool = Field(True, description="Drop rows whose normalised text (case, spacing, punctuation folded) equals an earlier row's.")
    near: bool = Field(True, description="Drop near-duplicates found by MinHash LSH (needs datasketch); the first row of each cluster is kept.")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Estimated Jaccard similarity of word shingles at or above which two rows are near-duplicates.")
    shingle_size: int = Field(5, ge=1, description="Words per shingle for near-duplicate detection.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations; more = a more exact Jaccard estimate, slower.")


class PreparePIIConfig(_Section):
    action: Literal["redact", "drop", "off"] = Field("redact", description="redact: replace with typed placeholders (<EMAIL>); drop: drop the row; off: do nothing.")
    types: list[Literal["email", "phone", "credit_card", "ip_address", "iban", "api_key"]] = Field(
        default_factory=lambda: ["email", "phone", "credit_card", "ip_address", "iban", "api_key"],
        description="Kinds of personal data to find.",
    )


class PrepareContaminationConfig(_Section):
    benchmarks: list[str] = Field(default_factory=list, description="Benchmark files (any readable data file, e.g. gsm8k/test.jsonl); every text field of each item is checked.")
    ngram: int = Field(13, ge=4, description="Words per n-gram; a training row sharing one n-gram with a benchmark item is contaminated (GPT-3, sec. 4 / app. C).")
    min_item_words: int = Field(8, ge=1, description="Benchmark items shorter than `ngram` words are matched as a whole when they have at least this many words.")
    action: Literal["drop", "flag"] = Field("drop", description="drop contaminated rows, or keep them with the benchmark item in a `_contamination` column.")
    min_overlap: float = Field(0.0, ge=0.0, le=1.0, description="0: one shared n-gram makes a row contaminated (GPT-3). Above 0: the row must hold at least this share of one item's n-grams.")


class PrepareConfig(_Section):
    normalize: PrepareNormalizeConfig = Field(default_factory=PrepareNormalizeConfig)
    filters: PrepareFiltersConfig = Field(default_factory=PrepareFiltersConfig)
    dedup: PrepareDedupConfig = Field(default_factory=PrepareDedupConfig)
    pii: PreparePIIConfig = Field(default_factory=PreparePIIConfig)
    contamination: PrepareContaminationConfig = Field(default_factory=PrepareContaminationConfig)
    tokenizer: str = Field("", description="Tokenizer (directory or hub id) for token counts; empty = `model.path`; none at all = whitespace words.")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Held out as the eval split, per source (stratified), seeded by `seed`.")
    weights: list[float] = Field(default_factory=list, description="Mixing weights, one per `data.train` file (e.g. [0.8, 0.2]); the train split is downsampled to these shares. Empty = keep all.")
    seed: int = Field(42, description="Seed of the split and the mixing.")
    jsonl: bool = Field(False, description="Also write train.jsonl / eval.jsonl next to the Arrow splits.")
    progress: bool = Field(True, description="Show a progress bar on stderr.")

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, v: list[float]) -> list[float]:
        if any(w < 0 for w in v) or (v and sum(v) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum, e.g. [0.8, 0.2]")
        return v

