"""`tunesmith serve` throughput on the CPU: the base alone vs a mix of 3 LoRA adapters, at 1, 4
and 16 concurrent `openai` clients, against sequential `transformers` generate (one request at a
time, PEFT for the adapter rows; run before and after the server cells, the faster run kept).

    .venv/bin/python bench/serve_throughput.py [--model DIR] [--requests 16] [--max-tokens 32]

Writes bench/results/serve_throughput.json and the table into bench/README.md (between markers).
Run it on a quiet machine: see the note in bench/README.md on the shared dev machine.
Default model: the project's "small" Llama (hidden 256, 4 layers, untrained; --model takes any
transformers directory). Adapters: LoRA r 16 on every linear layer with random A and B (so each
changes the output). Greedy, `--max-tokens` tokens per request unless EOS comes first; tokens/s =
completion tokens of all requests / wall time of the cell; latency per request from send to the
whole answer. Server and clients share the machine's cores, so the server's numbers include the
clients' overhead; generate runs alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
README, RESULTS = HERE / "README.md", HERE / "results" / "serve_throughput.json"
PROMPTS = ["The cat sat on the", "Once upon a time there was a", "List three colours:", "Add 3 and 4.",
           "The river runs past the", "Spell the word moon.", "a b c d e f", "My favourite tree is the"]


def make_adapters(base: Path, root: Path) -> dict[str, Path]:
    from serve_helpers import make_lora

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {f"lora{i}": make_lora(base, root / f"lora{i}", seed=i, targets=targets, r=16) for i in range(3)}


def requests_for(n: int, mixed: bool) -> list[tuple[str, str]]:
    return [((f"lora{i % 3}" if mixed else "base"), PROMPTS[i % len(PROMPTS)]) for i in range(n)]


def run_server_cell(client, reqs, concurrency: int, max_tokens: int) -> dict:
    def one(req):
        t = time.perf_counter()
        r = client.completions.create(model=req[0], prompt=req[1], max_tokens=max_tokens, temperature=0)
        return r.usage.completion_tokens, time.perf_counter() - t

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, reqs))
    wall = time.perf_counter() - start
    return _summary([o[0] for o in out], [o[1] for o in out], wall)


def run_generate_cell(base: Path, adapters: dict[str, Path], reqs, max_tokens: int) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    peft_model = None
    if any(m != "base" for m, _ in reqs):
        peft_model = PeftModel.from_pretrained(model, adapters["lora0"], adapter_name="lora0")
        for name in ("lora1", "lora2"):
            peft_model.load_adapter(adapters[name], adapter_name=name)
    tokens, lat = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for name, prompt in reqs:
            t = time.perf_counter()
            ids = torch.tensor([tok(prompt).input_ids])
            if peft_model is not None:
                peft_model.set_adapter(name)
            m = peft_model if peft_model is not None else model
            out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False)
            tokens.append(out.shape[1] - ids.shape[1])
            lat.append(time.perf_counter() - t)
    return _summary(tokens, lat, time.perf_counter() - start)


def in_thread(fn, *args):
    """Run `fn` in a worker thread, as the server's engine runs. On the shared 2-core dev machine
    (load ~12) torch ops in the main thread ran ~10x slower than the same ops in any other thread
    (measured: generate 32 tokens 3.6-6.2 s in the main thread, 0.39-0.48 s in a worker), so a
    main-thread baseline would flatter the server."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _summary(tokens: list[int], lat: list[float], wall: float) -> dict:
    lat = sorted(lat)
    return {"requests": len(tokens), "tokens": sum(tokens), "wall_s": round(wall, 3),
            "tokens_per_s": round(sum(tokens) / wall, 1), "p50_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="transformers model directory (default: a fresh 'small' tiny Llama)")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()
    import openai
    import torch
    from serve_helpers import running

    from tunesmith.models.tiny import init_model
    from tunesmith.serve import ServeOptions, build_app
    from tunesmith.serve.loading import Target

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.model) if args.model else init_model(Path(tmp) / "small", size="small", seed=0)
        adapters = make_adapters(base, Path(tmp))
        rows, gen_runs = [], {False: [], True: []}
        for mixed in (False, True):
            gen_runs[mixed].append(in_thread(run_generate_cell, base, adapters, requests_for(args.requests, mixed), args.max_tokens))
        app, service = build_app(Target(base=base, adapters=adapters, name="base"), ServeOptions(max_tokens=args.max_tokens))
        with running(app, service) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
            client.completions.create(model="lora0", prompt="warm up", max_tokens=2)
            for mixed in (False, True):
                for conc in (1, 4, 16):
                    reqs = requests_for(args.requests, mixed)
                    rows.append({"models": "3 adapters" if mixed else "base", "engine": "tunesmith serve", "clients": conc,
                                 **run_server_cell(client, reqs, conc, args.max_tokens)})
                    print(rows[-1], flush=True)
        service.engine.stop()
        # generate again after the server cells and keep its faster run: the machine is shared, and the
        # baseline should not look slow because someone else's job ran during it
        for mixed in (False, True):
            gen_runs[mixed].append(in_thread(run_generate_cell, base, adapters, requests_for(args.requests, mixed), args.max_tokens))
            best = max(gen_runs[mixed], key=lambda r: r["tokens_per_s"])
            rows.insert(int(mixed), {"models": "3 adapters" if mixed else "base", "engine": "generate, sequential (best of 2)",
                                     "clients": 1, **best, "runs_tokens_per_s": [r["tokens_per_s"] for r in gen_runs[mixed]]})
    meta = {"model": args.model or "tiny 'small' (hidden 256, 4 layers)", "requests": args.requests,
            "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(), "minutes": round((time.time() - t0) / 60, 1),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    update_readme(rows, meta)
    print(f"wrote {RESULTS.relative_to(REPO)} and {README.relative_to(REPO)}")


def update_readme(rows: list[dict], meta: dict) -> None:
    gen = {r["models"]: r["tokens_per_s"] for r in rows if r["engine"].startswith("generate")}
    base16 = {r["clients"]: r["tokens_per_s"] for r in rows if r["engine"] == "tunesmith serve" and r["models"] == "base"}
    lines = [f"Latest run ({meta['date']}, {meta['minutes']} min): `.venv/bin/python bench/serve_throughput.py "
             f"--requests {meta['requests']} --max-tokens {meta['max_tokens']}`; model {meta['model']}, "
             f"{meta['torch_threads']} torch threads, greedy.", "",
             "| models | engine | clients | tokens/s | p50 s | p95 s | vs sequential generate | mixed / base |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["tokens_per_s"] / gen[r["models"]]
        mix = (f"{r['tokens_per_s'] / base16[r['clients']]:.2f}x" if r["engine"] == "tunesmith serve" and r["models"] != "base" else "")
        lines.append(f"| {r['models']} | {r['engine']} | {r['clients']} | {r['tokens_per_s']:,.1f} | {r['p50_s']} | "
                     f"{r['p95_s']} | {ratio:.2f}x | {mix} |")
    common.update_readme("serve_throughput", ["", *lines, ""], path=README,
                         heading="## `tunesmith serve` throughput (`serve_throughput.py`)")


if __name__ == "__main__":
    main()
