"""GPTQ and AWQ against round-to-nearest where rounding hurts: 3- and 2-bit weights, in memory.

At 4 bits the small pre-trained model of `quantize_ppl.py` barely notices any method, so that table
cannot tell the algorithms apart. Here every decoder linear is quantized at 3 and 2 bits (which the
packed formats do not store, hence in memory only) and the held-out perplexity of each algorithm is
compared with RTN on the same grid (GPTQ: symmetric; AWQ: asymmetric, as each writes). Writes its
table into bench/README.md.

    /work/main/.venv/bin/python bench/quantize_algos.py [--steps 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def cell(model_dir: Path, method: str, bits: int, group: int, calib, eval_ids) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    from tunesmith.export.gptq import rtn_quantize
    from tunesmith.export.quantize_data import perplexity
    from tunesmith.export.quantize_layers import decoder_layers, quantize_model_layers

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if method.startswith("rtn"):
        for m in decoder_layers(model).modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.data = rtn_quantize(m.weight.data, bits, group, sym=method == "rtn-sym")["deq"]
    else:
        quantize_model_layers(model, calib, method.removesuffix("-act"), bits, group, act_order=method.endswith("-act"))
    return perplexity(model, eval_ids), time.perf_counter() - t0


def main() -> None:
    from quantize_ppl import pretrained_model
    from transformers import AutoTokenizer

    from tunesmith.export.quantize import EVAL_WINDOWS
    from tunesmith.export.quantize_data import chunks, default_texts, perplexity

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--work", default="/tmp/tunesmith-bench-model", help="kept between runs: the pre-trained model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(args.work)
    model_dir = work / "pretrain" / "model"
    if not (model_dir / "config.json").is_file():
        pretrained_model(work, args.size, args.steps)
    tok = AutoTokenizer.from_pretrained(model_dir)
    calib_texts, eval_texts = default_texts()
    calib, eval_ids = chunks(tok, calib_texts, 256, 128), chunks(tok, eval_texts, 256, EVAL_WINDOWS)
    from transformers import AutoModelForCausalLM

    ref = perplexity(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(), eval_ids)
    lines = ["| bits | group | RTN sym | GPTQ | GPTQ act-order | GPTQ / RTN sym | RTN asym | AWQ | AWQ / RTN asym |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for bits, group in ((3, 16), (3, -1), (2, 16)):
        p = {m: cell(model_dir, m, bits, group, calib, eval_ids)[0]
             for m in ("rtn-sym", "gptq", "gptq-act", "rtn-asym", "awq")}
        print(bits, group, p, flush=True)
        lines.append(f"| {bits} | {'row' if group == -1 else group} | {p['rtn-sym']:.3f} | {p['gptq']:.3f} | "
                     f"{p['gptq-act']:.3f} | **{min(p['gptq'], p['gptq-act']) / p['rtn-sym']:.3f}x** | "
                     f"{p['rtn-asym']:.3f} | {p['awq']:.3f} | **{p['awq'] / p['rtn-asym']:.3f}x** |")
    text = "\n".join(lines)
    print(text)
    cmd = "/work/main/.venv/bin/python bench/quantize_algos.py " + " ".join(sys.argv[1:])
    common.update_readme("quantize_algos", [
        "", f"Latest run ({time.strftime('%Y-%m-%d %H:%M:%S')}, {(time.perf_counter() - t0) / 60:.1f} min):", "", "```",
        cmd.strip(), "```", "", f"Unquantized perplexity {ref:.3f}. Perplexity after quantizing every decoder linear in memory "
        "(lower is better; GPTQ / RTN uses the better GPTQ column):", "", text, "",
        f"Model: `{args.size}` Llama pre-trained here for {args.steps} steps (the `quantize_ppl.py` recipe); "
        "128 calibration and 64 held-out windows of 256 tokens, disjoint.", ""],
        heading="### Where rounding hurts: GPTQ and AWQ vs RTN at 3 and 2 bits (`quantize_algos.py`)")


if __name__ == "__main__":
    main()
