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


def export(model: str | Path, out: str | Path, format: str = "gguf", quant: str = "Q4_K_M",
           eval_file: str | Path | None = None, max_ppl_increase: float | None = None, verify: bool = True,
           overwrite: bool = False):
    """Write `model` (a merged transformers directory) as a GGUF file verified in llama.cpp, with an
    Ollama Modelfile and a report beside it; returns an `ExportResult`."""
    from .errors import UserError
    from .export.gguf_export import export_gguf

    if format != "gguf":
        raise UserError(f"--format {format!r} is not supported; the only export format is gguf")
    return export_gguf(model, out, quant=quant, overwrite=overwrite, verify=verify, eval_file=eval_file,
                       max_ppl_increase=max_ppl_increase)


def quickstart(out: str | Path = "runs/quickstart", overwrite: bool = False) -> dict:
    from .quickstart import run_quickstart

    return run_quickstart(Path(out), overwrite=overwrite)


__all__ = ["init_model", "inspect_data", "train", "quickstart", "export"]
