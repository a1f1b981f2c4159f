"""The Python face of every CLI stage: same names, same arguments."""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .models.tiny import init_model
from .train.run import train


def inspect_data(config: str | Path, overrides: list[str] | None = None, show: int = 2) -> str:
    """Token-length statistics of a config's data and the label mask of a few examples, as text."""
    from .data.inspect import bracketed, label_pieces
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
            lines.append(bracketed(label_pieces(tok, seg.input_ids, seg.labels)))
    return "\n".join(lines)


def convert(src: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write a `.gguf` file (or a packaged model's name, e.g. smollm2-135m-instruct) as a transformers
    directory: safetensors, tokenizer, chat template, generation config. A quantized file (Q4, Q8...)
    is dequantized: the result carries that file's quantization error and is NOT the original fp16
    model; config.json records the source file and its quant type under `tunesmith_gguf_source`."""
    from .models.convert import convert_gguf

    return convert_gguf(src, out, overwrite=overwrite)


def estimate(config: str | Path | None = None, overrides: list[str] | None = None, *, model: str | None = None,
             method: str | None = None, micro_batch_size: int | None = None, seq_len: int | None = None,
             gradient_checkpointing: bool | None = None, packing: bool | None = None, device: str = "cpu", gpus: int = 1,
             sharding: str | None = None, offload: str = "none", generation_tokens: int = 0, dataset_rows: int = 0,
             utilisation: float | None = None, prompt_tokens: int | None = None):
    """Memory breakdown, peak, fits and time of a `train` run of `config` (or of `model` + `method`
    without one), from the model's config.json alone; returns an `Estimate` (.render(), .to_json()).
    Online RL: `generation_tokens` is the expected completion length, `prompt_tokens` the prompt length."""
    from .estimate import estimate as _estimate, shortcut_overrides

    if config and "=" in str(config) and not Path(config).exists():  # no config, only overrides
        config, overrides = None, [str(config)] + list(overrides or [])
    extra = shortcut_overrides(model, method, micro_batch_size, seq_len, gradient_checkpointing, packing)
    return _estimate(config, list(overrides or []) + extra, device=device, gpus=gpus, sharding=sharding, offload=offload,
                     generation_tokens=generation_tokens, dataset_rows=dataset_rows, utilisation=utilisation,
                     prompt_tokens=prompt_tokens)


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


def serve(model: str | Path, adapters: list[str] | None = None, engine: str = "builtin", **options) -> int:
    """Serve `model` (and `adapters`, NAME=DIR) behind an OpenAI-compatible API until interrupted.
    Options are `tunesmith.serve.ServeOptions` fields (host, port, api_key, max_adapters, ...)."""
    from .serve import serve as _serve

    return _serve(model, adapters=adapters, engine=engine, **options)


def ui(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
       allow_train: bool = False, serve_url: str = "", serve_key: str = "") -> int:
    """The local web dashboard over the run directories under `runs` until interrupted (tunesmith.ui)."""
    from .ui.launch import run_ui

    return run_ui(runs, host=host, port=port, token=token, allow_train=allow_train, serve_url=serve_url, serve_key=serve_key)


def quickstart(out: str | Path = "runs/quickstart", overwrite: bool = False, tiny: bool = False) -> dict:
    """The real model (SmolLM2-135M-Instruct, needs the `real` and `gguf` extras) end to end, or with
    `tiny` the tiny model tunesmith builds itself."""
    if tiny:
        from .quickstart import run_quickstart

        return run_quickstart(Path(out), overwrite=overwrite)
    from .quickstart.real import run_real_quickstart

    return run_real_quickstart(Path(out), overwrite=overwrite)


def score(model: str | Path, data: str | Path, out: str | Path | None = None, overwrite: bool = False, batch_size: int = 8) -> dict:
    """Score prompt/response rows (or chosen/rejected pairs, with pairwise accuracy) with a reward model."""
    from .score import score as _score

    return _score(model, data, out=out, overwrite=overwrite, batch_size=batch_size)


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


def eval(config: str | Path | None = None, overrides: list[str] | None = None, *, model: str | None = None,  # noqa: A001
         adapter: str | None = None, base: str | None = None, tasks: str | list[str] | None = None,
         out: str | Path | None = None, overwrite: bool = False) -> dict:
    """`tunesmith eval`: perplexity, tasks, judge and before/after into OUT (default RUN_DIR/eval).
    Named like the subcommand (shadowing the builtin inside this module only)."""
    from .evaluate.run import evaluate

    return evaluate(config, overrides, model=model, adapter=adapter, base=base, tasks=tasks, out=out, overwrite=overwrite)


def merge(out: str | Path, base: str | Path | None = None, adapter: str | Path | list | None = None,
          weights: list[float] | None = None, config: str | Path | None = None, overrides: list[str] | None = None,
          base_quantization: str = "auto", dtype: str = "auto", overwrite: bool = False) -> dict:
    """Adapter merge (`base` + `adapter`) or model merging (`config`, a merge.yaml); verified before it is kept."""
    from .errors import UserError

    if config is not None:
        if base is not None or adapter:
            raise UserError("give either --config merge.yaml (model merging) or --base and --adapter, not both")
        from .merge.models import merge_models

        s = merge_models(config, out, overrides, overwrite=overwrite)
        s["verified"] = f"from_pretrained loads all {s['tensors']} tensors exactly as merged; " + (
            "probe logits finite" if s["probe_checked"] else "logits not checked (no tokenizer to make probe inputs)")
        return s
    if base is None or not adapter:
        raise UserError("`tunesmith merge` needs --base and --adapter (adapter merge) or --config merge.yaml (model merging)")
    if overrides:
        raise UserError(f"overrides {overrides} apply to --config only")
    from .merge.adapter import merge_adapter

    s = merge_adapter(base, adapter, out, weights, base_quantization=base_quantization, dtype=dtype, overwrite=overwrite)
    s["verified"] = (f"merged logits = adapter logits within {s['max_logit_diff']:.1e} (tolerance {s['tolerance']:.0e}); "
                     "saved weights reload bit-for-bit; chat template kept")
    return s


def quantize(model: str | Path, out: str | Path, method: str, bits: int = 4, group_size: int = 128,
             act_order: bool = False, calibration: str | Path | None = None, eval_file: str | Path | None = None,
             samples: int = 128, seq_len: int = 256, overwrite: bool = False) -> dict:
    """INT8/NF4/GPTQ/AWQ checkpoint of `model`, reloaded and scored (perplexity) against the original."""
    from .export.quantize import quantize_model

    return quantize_model(model, out, method, bits=bits, group_size=group_size, act_order=act_order,
                          calibration=calibration, eval_file=eval_file, samples=samples, seq_len=seq_len,
                          overwrite=overwrite)


__all__ = ["init_model", "convert", "inspect_data", "train", "estimate", "quickstart", "score", "prepare", "eval", "merge", "quantize",
           "export", "serve"]
