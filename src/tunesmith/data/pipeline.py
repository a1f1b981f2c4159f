"""Config -> training and eval rows: read, validate, render, mask, filter by length, split, pack.

Every example that does not make it into training is counted by reason and reported; none is
dropped silently.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ..config import DataConfig
from ..errors import DataError
from .encode import Encoded, encode_conversation, encode_text, resolve_chat_template
from .formats import Conversation, Text, load_examples
from .packing import Row, pack, unpacked


@dataclass
class PreparedData:
    train: list[Row]
    eval: list[Row]
    stats: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"count": 0}
    s = sorted(lengths)

    def q(p: float) -> int:
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    return {"count": len(s), "min": s[0], "mean": round(sum(s) / len(s), 1), "p50": q(0.5), "p90": q(0.9),
            "p99": q(0.99), "max": s[-1], "total": sum(s)}


def encode_all(examples, tokenizer, cfg: DataConfig, dropped: Counter, notes: list[str]) -> list[Encoded]:
    out: list[Encoded] = []
    for ex in examples:
        if isinstance(ex, Text):
            out.extend(encode_text(ex, tokenizer, cfg.max_length))
            continue
        assert isinstance(ex, Conversation)
        try:
            enc = encode_conversation(ex, tokenizer, cfg.train_on_prompt)
        except DataError as e:
            if cfg.on_error == "raise":
                raise
            dropped["fully masked or empty"] += 1
            if len(notes) < 5:
                notes.append(str(e))
            continue
        if len(enc) > cfg.max_length:
            if cfg.overlength == "error":
                raise DataError(f"{ex.where}: {len(enc)} tokens > data.max_length {cfg.max_length}; raise data.max_length or set data.overlength: drop|truncate")
            if cfg.overlength == "drop":
                dropped[f"longer than max_length {cfg.max_length}"] += 1
                continue
            enc = Encoded(enc.input_ids[: cfg.max_length], enc.labels[: cfg.max_length], enc.where)
            if enc.n_labels == 0:
                dropped["no labels left after truncation"] += 1
                continue
        out.append(enc)
    return out


def _note_skipped(report, prefix: str, notes: list[str]) -> None:
    if report.skipped:
        notes.append(f"{prefix}skipped {sum(report.skipped.values())} of {report.rows} rows: "
                     + ", ".join(f"{n} {r}" for r, n in report.skipped.items())
                     + ("; first: " + "; ".join(report.first_skipped) if report.first_skipped else ""))


def _to_rows(encoded: list[Encoded], cfg: DataConfig, seed: int) -> list[Row]:
    return pack(encoded, cfg.max_length, seed) if cfg.packing else unpacked(encoded)


def prepare_data(cfg: DataConfig, tokenizer, seed: int = 42) -> PreparedData:
    if not cfg.train:
        raise DataError("`data.train` is empty; give one or more data files")
    resolve_chat_template(tokenizer, cfg.chat_template)
    notes: list[str] = []
    examples, report = load_examples(cfg.train, cfg.format, cfg.columns, cfg.on_error)
    _note_skipped(report, "", notes)
    eval_skipped: dict[str, int] = {}
    if cfg.eval:
        eval_examples, ereport = load_examples(cfg.eval, cfg.format, cfg.columns, cfg.on_error)
        _note_skipped(ereport, "eval: ", notes)
        eval_skipped = ereport.skipped
    elif cfg.eval_fraction > 0:
        # Hold out before encoding, so a long document's blocks never straddle train and eval.
        idx = list(range(len(examples)))
        random.Random(seed).shuffle(idx)
        n_eval = max(1, int(len(idx) * cfg.eval_fraction))
        held = set(idx[:n_eval])
        eval_examples = [examples[i] for i in sorted(held)]
        examples = [e for i, e in enumerate(examples) if i not in held]
    else:
        eval_examples = []

    dropped: Counter = Counter()
    eval_dropped: Counter = Counter()
    train_enc = encode_all(examples, tokenizer, cfg, dropped, notes)
    eval_enc = encode_all(eval_examples, tokenizer, cfg, eval_dropped, notes)
    if dropped:
        notes.append("dropped after tokenization: " + ", ".join(f"{n} {r}" for r, n in dropped.items()))
    if eval_dropped:  # the eval loss is over fewer examples than the eval files hold: say so
        notes.append("eval: dropped after tokenization: " + ", ".join(f"{n} {r}" for r, n in eval_dropped.items()))
    if not train_enc:
        raise DataError(f"no training example is left after tokenization ({dict(dropped)}); check data.max_length and the data")
    train_rows = _to_rows(train_enc, cfg, seed)
    eval_rows = _to_rows(eval_enc, cfg, seed + 1)
    lengths = [len(e) for e in train_enc]
    stats = {
        "examples": length_stats(lengths),
        "label_tokens": sum(e.n_labels for e in train_enc),
        "rows": len(train_rows),
        "eval_examples": len(eval_enc),
        "dropped": dict(dropped),
        "eval_dropped": dict(eval_dropped),
        "eval_skipped": dict(eval_skipped),
    }
    if cfg.packing and train_rows:
        stats["packing_efficiency"] = round(sum(lengths) / (len(train_rows) * cfg.max_length), 4)
    return PreparedData(train_rows, eval_rows, stats, notes)
