"""The Python face of every CLI stage: same names, same arguments."""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .models.tiny import init_model
from .train.run import train


def inspect_data(config: str | Path, overrides: list[str] | None = None, show: int = 2) -> str:
    """Token-length statistics of a config's data and the label mask of a few examples, as text."""
    from .data.encode import IGNORE_INDEX
    from .data.pipeline import prepare_data
    from .models.loading import load_tokenizer

    cfg = load_config(config, overrides)
    tok = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    data = prepare_data(cfg.data, tok, seed=cfg.train.seed)
    lines = [f"data of {config}:"]
    for k, v in data.stats.items():
        lines.append(f"  {k}: {v}")
    lines += [f"  note: {n}" for n in data.notes]
    for row in data.train[:show]:
        for seg in row.segments[:1]:
            lines.append(f"\n--- {seg.where} ({len(seg)} tokens, {seg.n_labels} labels); [[labelled]] ---")
            text, open_ = [], False
            for tid, lab in zip(seg.input_ids, seg.labels):
                on = lab != IGNORE_INDEX
                if on != open_:
                    text.append("[[" if on else "]]")
                    open_ = on
                text.append(tok.decode([tid]))
            lines.append("".join(text) + ("]]" if open_ else ""))
    return "\n".join(lines)


def quickstart(out: str | Path = "runs/quickstart", overwrite: bool = False) -> dict:
    from .quickstart import run_quickstart

    return run_quickstart(Path(out), overwrite=overwrite)


def prepare(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    input: list[str] | None = None,
    format: str | None = None,
    out: str | Path | None = None,
    benchmarks: list[str] | None = None,
    tokenizer: str | None = None,
    jsonl: bool = False,
    overwrite: bool = False,
) -> dict:
    """Filter, deduplicate, scrub, check and split `data.train` into a prepared directory; returns the manifest.

    The arguments are shortcuts for config keys: input -> data.train, format -> data.format,
    out -> output_dir, benchmarks -> prepare.contamination.benchmarks, tokenizer -> prepare.tokenizer,
    jsonl -> prepare.jsonl. Without a config (or without `model:` in it) only data/prepare/output_dir are read.
    """
    from .data.prepare.job import load_prepare_job

    job = load_prepare_job(config, overrides, input=input, format=format, out=out, benchmarks=benchmarks, tokenizer=tokenizer, jsonl=jsonl)
    return job.run(overwrite=overwrite)


def score(model: str | Path, data: str | Path, out: str | Path | None = None, overwrite: bool = False, batch_size: int = 8) -> dict:
    """Score prompt/response rows (or chosen/rejected pairs, with pairwise accuracy) with a reward model."""
    from .score import score as _score

    return _score(model, data, out=out, overwrite=overwrite, batch_size=batch_size)


__all__ = ["init_model", "inspect_data", "train", "quickstart", "score", "prepare"]
