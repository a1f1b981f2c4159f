"""The Data page's backend: a prepared directory or a run config's data, as the model sees it.

Nothing here masks or renders on its own: examples are read by the training readers
(`load_examples`), encoded by the training pipeline's `encode_all` (chat template, label mask,
truncation and the drop reasons training would count), and shown token by token with
`label_pieces`, the function `tunesmith inspect-data` prints from. So a token is highlighted
exactly when training puts a label on it.

Work per request is bounded: a page encodes at most PAGE_MAX examples, and the length histogram
encodes at most HISTOGRAM_EXAMPLES, spread evenly over the data, once per source. Reading the
rows themselves (no tokenizer) happens once per source, as training does.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import UserError

PAGE_MAX = 50
HISTOGRAM_EXAMPLES = 2000
HISTOGRAM_BINS = 30
_NO_TOKENIZER = "whitespace words"  # what prepare's manifest says when it ran without one


@dataclass
class Source:
    """Where the rows come from and how training would encode them."""

    path: Path
    kind: str  # "prepared" | "config"
    data: DataConfig
    tokenizer: str
    trust_remote_code: bool = False
    manifest: dict | None = None  # prepare's manifest.json (drop reasons, token statistics)


def read_manifest(directory: Path) -> dict:
    """prepare's manifest.json, or an error naming the file and how to get a good one."""
    path = directory / "manifest.json"
    if not path.is_file():
        if (directory / "train" / "state.json").is_file():
            raise UserError(f"{path}: missing, so {directory} is not a complete `tunesmith prepare` output and its report "
                            f"(rows dropped and why) is lost; rerun `tunesmith prepare ... --out {directory} --overwrite`")
        raise UserError(f"{directory}: neither a directory written by `tunesmith prepare` (no manifest.json) nor a config; "
                        "give a prepared directory or a run config YAML")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e}); rerun `tunesmith prepare ... --out {directory} --overwrite`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("steps"), list) or "splits" not in manifest:
        raise UserError(f"{path}: not a prepare manifest (no `steps`/`splits`); rerun `tunesmith prepare ... --out {directory} --overwrite`")
    return manifest


def resolve_source(path: str | Path, tokenizer: str = "", overrides: list[str] | None = None) -> Source:
    """A prepared directory (its manifest names the tokenizer) or a run config (its model's)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory; give a directory written by `tunesmith prepare` or a run config YAML")
    if p.is_dir():
        manifest = read_manifest(p)
        kinds = {i.get("format") for i in manifest.get("inputs", []) if isinstance(i, dict)} & {"preference", "kto"}
        if kinds:  # training encodes these as chosen/rejected pairs, not as one labelled sequence
            raise UserError(f"{p}: holds {', '.join(sorted(kinds))} rows; the Data page shows SFT data (conversations, "
                            "instructions, text). Its manifest.json and prepare_report.md have the counts")
        d = manifest.get("data") or {}
        data = DataConfig(train=[str(p)], format=d.get("format", "auto"), columns=d.get("columns") or {},
                          max_length=d.get("max_length", 2048), on_error=d.get("on_error", "raise"))
        tok = tokenizer or str(manifest.get("tokenizer") or "")
        if not tok or tok == _NO_TOKENIZER:
            raise UserError(f"{p / 'manifest.json'}: prepared without a tokenizer, so the tokens the model sees are unknown; "
                            "give the model's tokenizer (a model directory) beside the path")
        return Source(p, "prepared", data, tok, manifest=manifest)
    if p.suffix not in (".yaml", ".yml"):
        raise UserError(f"{p}: not a YAML config or a prepared directory; give a run config (.yaml) or the directory "
                        "`tunesmith prepare` wrote")
    from ..config import load_config

    cfg = load_config(p, overrides)
    return Source(p, "config", cfg.data, tokenizer or cfg.model.path, cfg.model.trust_remote_code)


def histogram(lengths: list[int], bins: int = HISTOGRAM_BINS) -> list[dict]:
    """At most `bins` equal-width integer bins from the shortest to the longest: [{lo, hi, count}],
    lo inclusive and hi exclusive, so every length falls in exactly one bin."""
    if not lengths:
        return []
    lo, top = min(lengths), max(lengths)
    width = max(1, -(-(top - lo + 1) // bins))  # ceil: the bins cover lo..top
    counts = Counter((n - lo) // width for n in lengths)
    return [{"lo": lo + i * width, "hi": lo + (i + 1) * width, "count": counts.get(i, 0)} for i in range(max(counts) + 1)]


class DataView:
    """One source, its tokenizer loaded once; thread-safe (FastAPI runs sync routes in a pool)."""

    def __init__(self, source: Source, tokenizer: Any = None):
        from ..data.encode import resolve_chat_template

        self.source = source
        if tokenizer is None:
            from ..models.loading import load_tokenizer

            tokenizer = load_tokenizer(source.tokenizer, source.trust_remote_code)
        self.tok = tokenizer
        resolve_chat_template(self.tok, source.data.chat_template)
        # Bad rows are shown as drops rather than stopping the page; the counts say what training would do.
        self._read_cfg = source.data.model_copy(update={"on_error": "skip"})
        self._lock = threading.Lock()
        # A fast tokenizer shared by threads can fail with "Already borrowed": one encode at a time.
        self._tok_lock = threading.Lock()
        self._examples: dict[str, tuple[list, Any]] = {}
        self._hist: dict[str, dict] = {}

    def files(self, split: str) -> list[str]:
        s = self.source
        if split == "train":
            return list(s.data.train)
        if split != "eval":
            raise UserError(f"split {split!r}: use train or eval")
        if s.kind == "prepared":
            if not (s.path / "eval" / "state.json").is_file():
                raise UserError(f"{s.path}: has no eval split (prepare.eval_fraction was 0)")
            return [str(s.path / "eval")]
        if not s.data.eval:
            raise UserError(f"{s.path}: `data.eval` is empty (an eval_fraction is held out of train at training time)")
        return list(s.data.eval)

    def examples(self, split: str = "train") -> tuple[list, Any]:
        """(examples, LoadReport) of a split, read once."""
        from ..data.formats import load_examples

        with self._lock:
            if split not in self._examples:
                d = self._read_cfg
                self._examples[split] = load_examples(self.files(split), d.format, d.columns, "skip")
            return self._examples[split]

    def encode(self, example) -> tuple[list, str | None]:
        """(Encoded blocks, why it was dropped or None), by the training pipeline's own code."""
        from ..data.pipeline import encode_all

        dropped: Counter = Counter()
        notes: list[str] = []
        try:
            with self._tok_lock:
                out = encode_all([example], self.tok, self._read_cfg, dropped, notes)
        except UserError as e:  # data.overlength: error, or a template that cannot be masked
            return [], str(e)
        if not out:
            reason = next(iter(dropped), "dropped")
            return [], reason + (f" ({notes[0]})" if notes else "")
        return out, None

    def page(self, offset: int = 0, limit: int = 10, split: str = "train") -> dict:
        from ..data.formats import Conversation
        from ..data.inspect import label_pieces

        if offset < 0 or limit < 1:
            raise UserError(f"offset {offset}, limit {limit}: offset must be >= 0 and limit >= 1")
        limit = min(limit, PAGE_MAX)
        examples, _ = self.examples(split)
        rows = []
        for i in range(offset, min(offset + limit, len(examples))):
            ex = examples[i]
            blocks, why = self.encode(ex)
            with self._tok_lock:
                pieces = [label_pieces(self.tok, b.input_ids, b.labels) for b in blocks]
            rows.append({
                "index": i, "where": ex.where, "kind": "conversation" if isinstance(ex, Conversation) else "text",
                "messages": ex.messages if isinstance(ex, Conversation) else None,
                "dropped": why,
                "segments": [{"n_tokens": len(b), "n_labels": b.n_labels, "tokens": [[t, on] for t, on in p]}
                             for b, p in zip(blocks, pieces)],
            })
        return {"split": split, "offset": offset, "limit": limit, "total": len(examples), "rows": rows}

    def lengths(self, split: str = "train") -> dict:
        """Token-length histogram and drop tally over up to HISTOGRAM_EXAMPLES examples spread evenly."""
        with self._lock:
            cached = self._hist.get(split)
        if cached is not None:
            return cached
        examples, report = self.examples(split)
        step = max(1, -(-len(examples) // HISTOGRAM_EXAMPLES))
        lengths, labels, dropped, shown = [], 0, Counter(), {}
        for i in range(0, len(examples), step):
            blocks, why = self.encode(examples[i])
            if why is not None:
                dropped[why.split(" (")[0]] += 1
                shown.setdefault(why.split(" (")[0], []).append(examples[i].where)
            for b in blocks:
                lengths.append(len(b))
                labels += b.n_labels
        from ..data.pipeline import length_stats

        out = {"split": split, "sampled": len(range(0, len(examples), step)), "of": len(examples),
               "max_length": self.source.data.max_length, "packing": self.source.data.packing,
               "bins": histogram(lengths), "stats": length_stats(lengths), "label_tokens": labels,
               "dropped": dict(dropped), "examples": {k: v[:3] for k, v in shown.items()},
               "skipped_on_read": dict(report.skipped), "first_skipped": list(report.first_skipped)}
        with self._lock:
            self._hist[split] = out
        return out

    def drops(self) -> dict:
        """Why rows did not make it: prepare's steps (a prepared directory) and the reader's skips."""
        _, report = self.examples("train")
        steps = []
        for s in (self.source.manifest or {}).get("steps", []):
            steps.append({"step": s.get("step", "?"), "rows_in": s.get("rows_in", 0), "rows_out": s.get("rows_out", 0),
                          "dropped": s.get("dropped", {}), "examples": s.get("examples", {}), "notes": s.get("notes", [])})
        return {"prepare_steps": steps, "skipped_on_read": dict(report.skipped), "first_skipped": list(report.first_skipped),
                "has_report": (self.source.path / "prepare_report.md").is_file() if self.source.kind == "prepared" else None}

    def summary(self) -> dict:
        s = self.source
        m = s.manifest or {}
        return {"path": str(s.path), "kind": s.kind, "tokenizer": s.tokenizer, "format": s.data.format,
                "max_length": s.data.max_length, "packing": s.data.packing, "train_on_prompt": s.data.train_on_prompt,
                "chat_template": s.data.chat_template, "splits": m.get("splits"), "token_stats": m.get("stats"),
                "train_files": list(s.data.train)}
