"""Config -> preference (or KTO) training and eval examples: read, validate, tokenize, truncate, split.

The counterpart of data/pipeline.py for paired and unpaired preference data. The objective brings
what differs (the file format `kind` and its `encode` function, objectives/preference.py and
kto.py); every encoded example has `responses()`, `cut(prompt, responses)` and `n_labels`, so
nothing here knows which it is. Every example that does not make it into training or evaluation
is counted by reason and reported.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from ..errors import DataError
from .encode import resolve_chat_template
from .pipeline import PreparedData, length_stats
from .preference import load_preference
from .preference_encode import truncate


def _encode(examples, encode: Callable, tokenizer, data_cfg, max_prompt_length: int, dropped: Counter, notes: list[str]) -> list:
    out = []
    for ex in examples:
        try:
            enc = encode(ex, tokenizer)
        except DataError as e:
            if data_cfg.on_error == "raise":
                raise
            dropped["could not be tokenized"] += 1
            if len(notes) < 5:
                notes.append(str(e))
            continue
        if len(enc.prompt_ids) > max_prompt_length:
            dropped[f"prompt cut to its last {max_prompt_length} tokens (kept)"] += 1
        cut = truncate(enc.prompt_ids, enc.responses(), max_prompt_length, data_cfg.max_length, data_cfg.overlength, enc.where)
        if cut is None:
            dropped[f"longer than max_length {data_cfg.max_length}"] += 1
            continue
        out.append(enc.cut(*cut))
    return out


def _skipped_note(report, what: str) -> list[str]:
    if not report.skipped:
        return []
    return [f"{what}skipped {sum(report.skipped.values())} of {report.rows} rows: "
            + ", ".join(f"{n} {r}" for r, n in report.skipped.items())]


def prepare_preference_data(cfg, tokenizer, kind: str, encode: Callable, seed: int = 42) -> PreparedData:
    """`cfg` is the RunConfig; `kind` the file format ("pairs" or "kto", data/preference.py) and
    `encode(example, tokenizer)` its encoder. Each row's `id` is its position in train + eval."""
    data_cfg = cfg.data
    if not data_cfg.train:
        raise DataError("`data.train` is empty; give one or more preference files")
    resolve_chat_template(tokenizer, data_cfg.chat_template)
    examples, report = load_preference(data_cfg.train, kind, data_cfg.columns, data_cfg.on_error)
    notes = _skipped_note(report, "")
    if data_cfg.eval:
        eval_examples, eval_report = load_preference(data_cfg.eval, kind, data_cfg.columns, data_cfg.on_error)
        notes += _skipped_note(eval_report, "eval: ")
    elif data_cfg.eval_fraction > 0:
        idx = list(range(len(examples)))
        random.Random(seed).shuffle(idx)
        held = set(idx[: max(1, int(len(idx) * data_cfg.eval_fraction))])
        eval_examples = [examples[i] for i in sorted(held)]
        examples = [e for i, e in enumerate(examples) if i not in held]
    else:
        eval_examples = []
    dropped: Counter = Counter()
    eval_dropped: Counter = Counter()
    mpl = cfg.prompt_length()
    train = _encode(examples, encode, tokenizer, data_cfg, mpl, dropped, notes)
    evals = _encode(eval_examples, encode, tokenizer, data_cfg, mpl, eval_dropped, notes)
    if dropped:
        notes.append("after tokenization: " + ", ".join(f"{n} {r}" for r, n in dropped.items()))
    if eval_dropped:
        notes.append("eval: after tokenization: " + ", ".join(f"{n} {r}" for r, n in eval_dropped.items()))
    if not train:
        raise DataError(f"no training example is left after tokenization ({dict(dropped)}); check data.max_length and the data")
    random.Random(seed).shuffle(train)
    for i, e in enumerate(train + evals):
        e.id = i
    stats = {"examples": length_stats([len(e) for e in train]), "label_tokens": sum(e.n_labels for e in train),
             "rows": len(train), "eval_examples": len(evals), "dropped": dict(dropped), "eval_dropped": dict(eval_dropped)}
    return PreparedData(train, evals, stats, notes)
