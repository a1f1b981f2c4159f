"""`tunesmith prepare`: read -> normalise -> filter -> dedup -> PII -> contamination -> split/mix -> write.

Rows stream through the steps in chunks; the survivors are spooled to JSONL on disk, one file per
source, and only row indices are held for the split and the mix. Everything is written into a
temporary directory beside the output and renamed into place at the end, so a failed run leaves
no half-written output, and an existing output is replaced only with `overwrite`. The input files
are only ever opened for reading. The output holds no timestamps, so the same input, config and
seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ...console import progress_bar

from ...config import DataConfig, PrepareConfig
from ...errors import ConfigError, DataError
from ...io import atomic_dir, check_output
from ..formats import RowError
from ..readers import read_rows
from .contamination import ContaminationCheck
from .dedup import ExactDedup, NearDedup
from .filters import QualityFilter, TokenCounter
from .pii import PIIScrubber
from .records import Record, detect_kind, normalize, to_record
from .report import render_report
from .split import mix_indices, split_indices
from .stats import TokenStats
from .steps import StepReport

CHUNK = 1000


def file_sha256(path: str) -> str:
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _steps(cfg: PrepareConfig, counter: TokenCounter) -> list:
    steps: list = [QualityFilter(cfg.filters, counter)]
    if cfg.dedup.exact:
        steps.append(ExactDedup())
    if cfg.dedup.near:
        steps.append(NearDedup(cfg.dedup))
    if cfg.pii.action != "off":
        steps.append(PIIScrubber(cfg.pii))
    if cfg.contamination.benchmarks:
        steps.append(ContaminationCheck(cfg.contamination))
    return steps


def _check_job(data: DataConfig, cfg: PrepareConfig, out: Path, overwrite: bool) -> None:
    if not data.train:
        raise ConfigError("`data.train` is empty; give the files to prepare (or --input FILE ...)")
    if cfg.weights and len(cfg.weights) != len(data.train):
        raise ConfigError(f"`prepare.weights` has {len(cfg.weights)} weights for {len(data.train)} `data.train` files; give one per file")
    for path in data.train:
        read_rows(path)  # checks that it exists and is a kind we read; reads nothing yet
    # A training run shares the config's output_dir: check_output refuses to replace another stage's output.
    check_output(out, "prepare", overwrite=overwrite, inputs=_inputs(data, cfg))


def _inputs(data: DataConfig, cfg: PrepareConfig) -> list[str]:
    return [*data.train, *cfg.contamination.benchmarks]


def _read_source(s: int, path: str, data: DataConfig, cfg: PrepareConfig, read: StepReport, sink, wanted: str) -> str:
    """Stream one input file through `sink` in chunks; returns the format it was read as."""
    fmt = None
    chunk: list[Record] = []
    def unreadable(e) -> None:  # data.on_error: skip also skips lines the reader cannot read (bad JSON, not UTF-8)
        read.rows_in += 1
        read.drop(f"malformed row: {e.reason}", e.where)

    # A missing or unreadable file fails here, before the bar is drawn.
    rows = read_rows(path, on_bad=unreadable if data.on_error == "skip" else None)
    bar = progress_bar(desc=f"prepare {Path(path).name}", unit=" rows", disable=not cfg.progress, mininterval=1.0)
    for row in rows:
        read.rows_in += 1
        bar.update()
        if fmt is None:
            fmt = detect_kind(row, wanted, data.columns)
        try:
            rec = to_record(row, fmt, s, data.columns)
        except RowError as e:
            if data.on_error == "raise":
                raise DataError(f"{e}; set `data.on_error: skip` to drop and count such rows") from None
            read.drop(f"malformed row: {e.reason}", e.where)
            continue
        chunk.append(normalize(rec, cfg.normalize.unicode, cfg.normalize.whitespace))
        if len(chunk) >= CHUNK:
            sink(chunk)
            chunk = []
    bar.close()
    if fmt is None:
        raise DataError(f"{path}: no rows found; is it the right file?")
    sink(chunk)
    return fmt


def _write_split(tmp: Path, name: str, spools: list[Path], picks: list[list[int]], stats: TokenStats | None, kinds: list[str]) -> int:
    """Copy the picked spooled rows to <name>.jsonl, then to Arrow in <name>/; rows written."""
    path, n = tmp / f"{name}.jsonl", 0
    with open(path, "w", encoding="utf-8") as out:
        for s, (spool, wanted) in enumerate(zip(spools, picks)):
            wanted_set, batch = set(wanted), []
            with open(spool, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i in wanted_set:
                        out.write(line)
                        n += 1
                        if stats is not None:
                            d = json.loads(line)
                            batch.append(Record(kinds[s], d, d["_origin"], s))
                            if len(batch) >= CHUNK:
                                stats.add(batch)
                                batch = []
            if stats is not None and batch:
                stats.add(batch)
    if n:
        _to_arrow(path, tmp / name)
    return n


def _to_arrow(jsonl: Path, dest: Path) -> None:
    import datasets

    def rows(p: str):
        with open(p, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own bar is the one a person reads
    fingerprint = file_sha256(str(jsonl))[:16]  # content-derived, so reruns write identical state.json
    cache = jsonl.parent / ".cache"
    try:
        ds = datasets.Dataset.from_generator(rows, gen_kwargs={"p": str(jsonl)}, cache_dir=str(cache), fingerprint=fingerprint)
        ds.save_to_disk(str(dest))
        del ds
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()


def run_prepare(data: DataConfig, cfg: PrepareConfig, out: str | Path, tokenizer=None,
                micro_batch_size: int = 4, overwrite: bool = False, fmt: str | None = None) -> dict[str, Any]:
    """Prepare `data.train` into `out` (train/, eval/, manifest.json, prepare_report.md, lengths.png)."""
    out = Path(out)
    _check_job(data, cfg, out, overwrite)
    counter = TokenCounter(tokenizer)
    steps = _steps(cfg, counter)
    read = StepReport("read + normalise")
    read.notes.append(f"unicode {cfg.normalize.unicode}, whitespace clean-up {'on' if cfg.normalize.whitespace else 'off'}")
    with atomic_dir(out, "prepare", overwrite=overwrite, inputs=_inputs(data, cfg)) as tmp:
        manifest = _prepare_into(tmp, data, cfg, steps, read, counter, micro_batch_size, fmt or data.format)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "prepare_report.md").write_text(render_report(manifest), encoding="utf-8")
    return {**manifest, "output_dir": str(out)}


def _prepare_into(tmp: Path, data: DataConfig, cfg: PrepareConfig, steps: list, read: StepReport,
                  counter: TokenCounter, micro_batch_size: int, fmt: str) -> dict[str, Any]:
    spools = [tmp / f"spool-{s}.jsonl" for s in range(len(data.train))]
    counts = [0] * len(data.train)
    inputs, kinds = [], []
    for s, path in enumerate(data.train):
        rows_before = read.rows_in
        with open(spools[s], "w", encoding="utf-8") as spool:

            def sink(chunk: list[Record], s=s, spool=spool) -> None:
                read.rows_out += len(chunk)
                for step in steps:
                    chunk = step(chunk)
                for rec in chunk:
                    spool.write(json.dumps({**rec.data, "_source": data.train[s], "_origin": rec.where}, ensure_ascii=False) + "\n")
                counts[s] += len(chunk)

            used = _read_source(s, path, data, cfg, read, sink, fmt)
        kinds.append({"text": "text", "preference": "preference", "kto": "kto"}.get(used, "conversation"))
        inputs.append({"path": str(path), "format": used, "rows": read.rows_in - rows_before, "sha256": file_sha256(path)})
    if len(set(kinds)) > 1:
        mixed = ", ".join(f"{i['path']}: {k}" for i, k in zip(inputs, kinds))
        raise DataError(f"the inputs hold different kinds of rows ({mixed}); prepare each kind separately")
    train_idx, eval_idx = split_indices(counts, cfg.eval_fraction, cfg.seed)
    if cfg.weights:
        train_idx = mix_indices(train_idx, cfg.weights, cfg.seed)
    stats = TokenStats(counter)
    n_train = _write_split(tmp, "train", spools, train_idx, stats, kinds)
    n_eval = _write_split(tmp, "eval", spools, eval_idx, None, kinds)
    if not n_train:
        raise DataError("no row is left for training after the steps; see the counts: " + "; ".join(
            f"{r.name}: {dict(r.dropped)}" for r in [read, *(st.report for st in steps)] if r.dropped))
    for f in spools:
        f.unlink()
    for name, n in (("train", n_train), ("eval", n_eval)):
        if (not cfg.jsonl or not n) and (tmp / f"{name}.jsonl").exists():
            (tmp / f"{name}.jsonl").unlink()
    summary = stats.summary(data.max_length, micro_batch_size, cfg.seed)
    stats.plot(tmp / "lengths.png", data.max_length)
    return {
        "inputs": inputs,
        "benchmarks": [{"path": str(b), "sha256": file_sha256(b)} for b in cfg.contamination.benchmarks],
        "steps": [read.as_dict(), *(st.report.as_dict() for st in steps)],
        "contaminated_rows": next((st.rows[:1000] for st in steps if isinstance(st, ContaminationCheck)), []),
        "splits": {"train": n_train, "eval": n_eval},
        "sources": [{"path": str(p), "kept": c, "train": len(t), "eval": len(e)} for p, c, t, e in zip(data.train, counts, train_idx, eval_idx)],
        "stats": summary,
        "tokenizer": getattr(counter.tokenizer, "name_or_path", None) or "whitespace words",
        "data": {"format": data.format, "columns": data.columns, "max_length": data.max_length, "on_error": data.on_error},
        "prepare": cfg.model_dump(mode="json"),
    }
