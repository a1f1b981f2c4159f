"""Config -> preference (or KTO) training and eval examples: read, validate, tokenize, truncate, split.

The counterpart of data/pipeline.py for paired and unpaired preference data; every example that
does not make it into training is counted by reason and reported.
"""

from __future__ import annotations

import random
from collections import Counter

from ..errors import DataError
from .encode import resolve_chat_template
from .pipeline import PreparedData, length_stats
from .preference import load_preference
from .preference_encode import EncodedKTO, EncodedPair, encode_kto, encode_pair, truncate


def _encode(examples, tokenizer, kind: str, data_cfg, max_prompt_length: int, dropped: Counter, notes: list[str]) -> list:
    out = []
    for ex in examples:
        try:
            enc = encode_kto(ex, tokenizer) if kind == "kto" else encode_pair(ex, tokenizer)
        except DataError as e:
            if data_cfg.on_error == "raise":
                raise
            dropped["could not be tokenized"] += 1
            if len(notes) < 5:
                notes.append(str(e))
            continue
        responses = [enc.completion_ids] if kind == "kto" else [enc.chosen_ids, enc.rejected_ids]
        if len(enc.prompt_ids) > max_prompt_length:
            dropped[f"prompt cut to its last {max_prompt_length} tokens (kept)"] += 1
        cut = truncate(enc.prompt_ids, responses, max_prompt_length, data_cfg.max_length, data_cfg.overlength, enc.where)
        if cut is None:
            dropped[f"longer than max_length {data_cfg.max_length}"] += 1
            continue
        prompt, responses = cut
        if kind == "kto":
            out.append(EncodedKTO(prompt, responses[0], enc.label, enc.where))
        else:
            out.append(EncodedPair(prompt, responses[0], responses[1], enc.where))
    return out


def prepare_preference_data(cfg, tokenizer, kind: str = "pairs", seed: int = 42) -> PreparedData:
    """`cfg` is the RunConfig; `kind` "pairs" (reward, dpo family) or "kto". Rows are EncodedPair / EncodedKTO."""
    data_cfg = cfg.data
    if not data_cfg.train:
        raise DataError("`data.train` is empty; give one or more preference files")
    resolve_chat_template(tokenizer, data_cfg.chat_template)
    notes: list[str] = []
    examples, report = load_preference(data_cfg.train, kind, data_cfg.columns, data_cfg.on_error)
    if report.skipped:
        notes.append(f"skipped {sum(report.skipped.values())} of {report.rows} rows: "
                     + ", ".join(f"{n} {r}" for r, n in report.skipped.items()))
    if data_cfg.eval:
        eval_examples, _ = load_preference(data_cfg.eval, kind, data_cfg.columns, data_cfg.on_error)
    elif data_cfg.eval_fraction > 0:
        idx = list(range(len(examples)))
        random.Random(seed).shuffle(idx)
        held = set(idx[: max(1, int(len(idx) * data_cfg.eval_fraction))])
        eval_examples = [examples[i] for i in sorted(held)]
        examples = [e for i, e in enumerate(examples) if i not in held]
    else:
        eval_examples = []
    dropped: Counter = Counter()
    mpl = cfg.prompt_length()
    train = _encode(examples, tokenizer, kind, data_cfg, mpl, dropped, notes)
    evals = _encode(eval_examples, tokenizer, kind, data_cfg, mpl, Counter(), [])
    if dropped:
        notes.append("after tokenization: " + ", ".join(f"{n} {r}" for r, n in dropped.items()))
    if not train:
        raise DataError(f"no training example is left after tokenization ({dict(dropped)}); check data.max_length and the data")
    random.Random(seed).shuffle(train)
    label_tokens = sum(len(e.completion_ids) if kind == "kto" else len(e.chosen_ids) + len(e.rejected_ids) for e in train)
    stats = {"examples": length_stats([len(e) for e in train]), "label_tokens": label_tokens, "rows": len(train),
             "eval_examples": len(evals), "dropped": dict(dropped)}
    if kind == "kto":
        stats["desirable"] = sum(e.label for e in train)
        stats["undesirable"] = len(train) - stats["desirable"]
    return PreparedData(train, evals, stats, notes)
