"""Perplexity and size of every `tunesmith quantize` method on one pre-trained model, side by side
with bitsandbytes NF4 (what the peers' QLoRA/4-bit exports use) and plain round-to-nearest (RTN) on
the same grid as GPTQ/AWQ, in one process run. Prints a table, writes bench/results/quantize_ppl.json
and the table into bench/README.md.

    /work/main/.venv/bin/python bench/quantize_ppl.py [--size small] [--steps 300]

The model is made and pre-trained here on the built-in corpus (no hub on these machines); the
perplexity is on built-in text disjoint from the calibration text, as `tunesmith quantize` reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def pretrained_model(work: Path, size: str, steps: int) -> Path:
    from tunesmith.models.tiny import init_model
    from tunesmith.quickstart import Budget, pretrain_config, write_corpus
    from tunesmith.train.run import train

    b = Budget(size=size, corpus_docs=8000, pretrain_steps=steps)
    corpus = write_corpus(work / "data" / "corpus.txt", b.corpus_docs, seed=b.seed)
    init_model(work / "base-init", size=size, corpus=[corpus], seed=0)
    cfg = pretrain_config(work, corpus, b)
    cfg.train.progress = False
    train(cfg, overwrite=True)
    return work / "pretrain" / "model"


def rtn_row(model_dir: Path, group_size: int, seq_len: int) -> dict:
    """RTN (symmetric, as GPTQ's grid) on every decoder linear: the baseline the algorithms must beat."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.export.gptq import rtn_quantize
    from tunesmith.export.quantize import EVAL_WINDOWS
    from tunesmith.export.quantize_data import chunks, default_texts, perplexity
    from tunesmith.export.quantize_layers import decoder_layers

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for m in decoder_layers(model).modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data = rtn_quantize(m.weight.data, 4, group_size, sym=True)["deq"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    ppl = perplexity(model, chunks(tok, default_texts()[1], seq_len, EVAL_WINDOWS))
    return {"ppl": ppl, "seconds": time.perf_counter() - t0, "size": None}


def run(model_dir: Path, out_root: Path, seq_len: int) -> tuple[list[dict], float]:
    from tunesmith.export.quantize import quantize_model

    rows, ppl_ref = [], None
    cells = [("int8", 8, None, False), ("nf4", 4, None, False)]
    for g in (16, -1):
        cells += [("rtn", 4, g, False), ("gptq", 4, g, False), ("gptq", 4, g, True), ("awq", 4, g, False)]
    cells += [("gptq", 8, 16, False)]
    for method, bits, g, act in cells:
        print(f"--- {method} {bits}-bit group {g} act_order {act}", flush=True)
        if method == "rtn":
            r = rtn_row(model_dir, g, seq_len)
        else:
            t0 = time.perf_counter()
            s = quantize_model(model_dir, out_root / f"{method}-{bits}-{g}-{act}", method, bits=bits,
                               group_size=g or 128, act_order=act, seq_len=seq_len, samples=128, overwrite=True,
                               max_ppl_ratio=100.0)
            ppl_ref = s["ppl_original"]
            r = {"ppl": s["ppl_quantized"], "seconds": time.perf_counter() - t0, "size": s["size_bytes_weights"],
                 "size_original": s["size_original_bytes"]}
        rows.append({"method": method, "bits": bits, "group_size": g, "act_order": act, **r})
    return rows, ppl_ref


def table(rows: list[dict], ppl_ref: float, size_ref: int) -> str:
    nf4 = next(r["ppl"] for r in rows if r["method"] == "nf4")
    rtn = {r["group_size"]: r["ppl"] for r in rows if r["method"] == "rtn"}
    lines = ["| method | bits | group | weights MiB | perplexity | vs fp32 | vs bnb NF4 | vs RTN same grid | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| fp32 (original) | 32 | | {size_ref / 2**20:.2f} | {ppl_ref:.3f} | | | | |"]
    for r in rows:
        name = {"int8": "int8 (bitsandbytes)", "nf4": "nf4 (bitsandbytes, double quant)", "rtn": "RTN (sym)",
                "gptq": "GPTQ" + (" act-order" if r["act_order"] else ""), "awq": "AWQ"}[r["method"]]
        g = {None: "64 (block)" if r["method"] == "nf4" else "", -1: "row"}.get(r["group_size"], r["group_size"])
        size = f"{r['size'] / 2**20:.2f}" if r["size"] else "(not saved)"
        vs_rtn = f"{r['ppl'] / rtn[r['group_size']]:.3f}x" if r["method"] in ("gptq", "awq") and r["bits"] == 4 else ""
        lines.append(f"| {name} | {r['bits']} | {g} | {size} | {r['ppl']:.3f} | {100 * (r['ppl'] / ppl_ref - 1):+.2f}% "
                     f"| {r['ppl'] / nf4:.3f}x | {vs_rtn} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = pretrained_model(work, args.size, args.steps)
        rows, ppl_ref = run(model_dir, work / "q", args.seq_len)
        size_ref = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    text = table(rows, ppl_ref, size_ref)
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "quantize_ppl.json").write_text(json.dumps({"args": vars(args), "ppl_original": ppl_ref,
                                                           "rows": rows}, indent=2))
    cmd = "/work/main/.venv/bin/python bench/quantize_ppl.py " + " ".join(sys.argv[1:])
    common.update_readme("quantize_ppl", [
        "", f"Latest run ({time.strftime('%Y-%m-%d %H:%M:%S')}, {(time.perf_counter() - t0) / 60:.1f} min):", "", "```",
        cmd.strip(), "```", "", text, "",
        f"Model: `{args.size}` Llama made and pre-trained here for {args.steps} steps on the built-in corpus. "
             f"Perplexity: 64 held-out windows of {args.seq_len} tokens, disjoint from the 128 calibration windows. "
             "Every quantized row is the checkpoint reloaded from disk (bitsandbytes through `from_pretrained`, "
             "GPTQ/AWQ through tunesmith's unpacker of the GPTQ v1 / AWQ GEMM layouts); RTN is in memory only. "
        f"Versions: torch {torch.__version__}.", ""], heading="## Quantization: perplexity and size (`quantize_ppl.py`)")


if __name__ == "__main__":
    main()
