"""CPU seconds per training step on the real model, and the fraction of the matmul bound (issue 17).

    PYTHONPATH=src .venv/bin/python bench/step_cpu.py --model /tmp/smollm2 [--steps 5] [--env KEY=VAL ...]
        [--label NAME] [--set train.key=value ...] [--compile default] [--bound-only]

The issue-17 configuration (bench/memory_real.py's): SmolLM2-135M-Instruct, LoRA r16/alpha32/dropout0
on every linear layer, 4 packed rows x 512 tokens of GSM8K per step, fp32, sdpa, one torch thread.
Each run is one fresh `tunesmith train` process (`--worker`) with the given environment (`--env`:
allocator variables such as MALLOC_MMAP_THRESHOLD_ or LD_PRELOAD) and config overrides (`--set`).
Without allocator variables the worker runs under the malloc `tunesmith train` would re-exec under
(jemalloc/mimalloc when found, train/allocator.py); `--env TUNESMITH_ALLOCATOR=system` for glibc's.
`--compile default` torch.compiles each decoder layer (measured, not a tunesmith option: bench/README.md).

Why CPU seconds and not wall seconds: the machine is shared, and CPU time (user + sys from
getrusage, per step) is what survives other jobs. sys time is where page faults show: an allocator
that hands out fresh mmaps every step pays for faulting in and zeroing every page of them.

Measured per step (at each step's end, from a callback): user and sys CPU seconds, minor page
faults, VmHWM (the process's peak RSS so far) and VmRSS. The steady state is the mean of steps
3..N (step 1 pays the first-touch of the weights, step 2 glibc's threshold adjustment). The matmul
bound is a timed (2048 x 576) @ (576 x 1536) fp32 sgemm loop at one thread in the driver, the
shapes of the model's MLP; FLOPs per step are counted from the batch (`flops_per_step`).
Appends one record per run to bench/results/step_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_JSON = HERE / "results" / "step_cpu.json"
DATA_CACHE = Path(tempfile.gettempdir()) / "tunesmith-step-cpu"
LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")


def _sample() -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": r.ru_utime, "sys": r.ru_stime, "minflt": r.ru_minflt, "hwm_mb": _status("VmHWM"),
            "rss_mb": _status("VmRSS"), "t": time.perf_counter()}


def matmul_bound(seconds: float = 3.0) -> float:
    """fp32 GFLOP/s of one thread on the model's largest matmul shape (the MLP's up/gate projection)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(2048, 576), torch.randn(576, 1536)
    out = torch.empty(2048, 1536)
    for _ in range(3):
        torch.mm(a, b, out=out)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        torch.mm(a, b, out=out)
        n += 1
    return n * 2 * 2048 * 576 * 1536 / (time.process_time() - t0) / 1e9


def flops_per_step(model_dir: str, positions: int, rows: int, row_len: int, labels: int) -> dict:
    """Useful FLOPs of one LoRA step: frozen linears 4 x params x positions (forward + input grad, no
    weight grad), LoRA 6 x params x positions, lm_head 4 x V x H x labels (only labelled rows go
    through it, train/losses.py), attention 3 x 4 x Hq x d x (T^2 / 2) per row and layer (causal half)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = h // hq
    shapes = [(h, hq * d), (h, hkv * d), (h, hkv * d), (hq * d, h), (h, inter), (h, inter), (inter, h)]
    frozen = layers * sum(i * o for i, o in shapes)
    lora = layers * LORA["r"] * sum(i + o for i, o in shapes)
    parts = {"linear": 4 * frozen * positions, "lora": 6 * lora * positions,
             "lm_head": 4 * cfg["vocab_size"] * h * labels, "attention": layers * rows * 3 * 4 * hq * d * row_len ** 2 / 2}
    return {**parts, "total": sum(parts.values())}


def compile_layers(mode: str):
    """`--compile MODE`: a callback that torch.compiles (inductor) each decoder layer in place before
    step 1 (regional compilation: one graph per layer shape, reused by the others). A bench-only lever:
    the measured numbers are in bench/README.md ("torch.compile of the decoder layers")."""
    from tunesmith.train.callbacks import Callback
    from tunesmith.train.forward import base_causal_lm

    class CompileLayers(Callback):
        def on_train_start(self, module, optimizer) -> None:
            for layer in base_causal_lm(module.model).model.layers:
                layer.compile(dynamic=False, mode=None if mode == "default" else mode)

    return CompileLayers()


def worker(spec: dict, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    cfg = {
        "model": {"path": spec["model_dir"], "dtype": "fp32"},
        "data": {"train": [spec["data"]], "format": "alpaca", "columns": {"instruction": "question", "output": "answer"},
                 "max_length": 512, "packing": True},
        "adapter": {"type": "lora", **LORA},
        "train": {"max_steps": spec["steps"], "micro_batch_size": 4, "grad_accum_steps": 1, "lr": 2e-4,
                  "scheduler": "cosine", "warmup_steps": 0, "precision": "fp32", "save_every": 0, "progress": False,
                  "seed": 0},
        "output_dir": spec["run_dir"],
    }
    for item in spec["set"]:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            cfg[section][name] = json.loads(value)  # numbers, true/false, lists
        except json.JSONDecodeError:
            cfg[section][name] = value
    samples = [_sample()]
    losses = []

    def on_step(step: int, record: dict) -> None:
        samples.append(_sample())
        losses.append(record["loss"])

    callbacks = [on_step] + ([compile_layers(spec["compile"])] if spec.get("compile") else [])
    summary = train(validate_config(cfg), overwrite=True, callbacks=callbacks)
    steps = [{k: round(b[k] - a[k], 3) for k in ("user", "sys", "minflt", "t")} | {"hwm_mb": b["hwm_mb"], "rss_mb": b["rss_mb"]}
             for a, b in zip(samples, samples[1:])]
    out.write_text(json.dumps({"steps": steps, "losses": losses, "peak_mb": samples[-1]["hwm_mb"],
                               "tokens": summary["tokens"], "data": summary["data"]}))


def prepare(model_dir: str, steps: int) -> str:
    sys.path.insert(0, str(HERE))
    import sft_vs_trl  # noqa: PLC0415

    path = DATA_CACHE / f"n{16 * steps}" / "train.jsonl"
    if not path.is_file():
        sft_vs_trl.prepare_data(path.parent, Path(model_dir), 16 * steps, 512)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="KEY=VAL for the worker's environment")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.compile=true")
    ap.add_argument("--label", default="")
    ap.add_argument("--compile", default="", help="torch.compile each decoder layer: default | max-autotune-no-cudagraphs")
    ap.add_argument("--bound-only", action="store_true")
    ap.add_argument("--worker"), ap.add_argument("--spec"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.spec), Path(args.out))
    if not args.model:
        ap.error("--model DIR is required (SmolLM2 as a transformers directory)")
    bound = matmul_bound()
    print(f"matmul bound (1 thread, 2048x576 @ 576x1536 fp32): {bound:.1f} GFLOP/s", flush=True)
    if args.bound_only:
        return
    work = Path(tempfile.mkdtemp(prefix="tunesmith-stepcpu-"))
    spec = {"model_dir": str(Path(args.model).resolve()), "data": prepare(args.model, args.steps), "steps": args.steps,
            "run_dir": str(work / "run"), "set": args.set,
            "compile": args.compile}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.update(kv.split("=", 1) for kv in args.env)
    sys.path.insert(0, str(HERE))
    from common import tunesmith_malloc  # noqa: PLC0415

    env = tunesmith_malloc(env)  # the malloc `tunesmith train` would pick, unless --env set one (or TUNESMITH_ALLOCATOR)
    out = work / "result.json"
    proc = subprocess.run([sys.executable, __file__, "--worker", "x", "--spec", json.dumps(spec), "--out", str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"worker failed (exit {proc.returncode})")
    r = json.loads(out.read_text())
    steady = r["steps"][2:] or r["steps"][1:]
    cpu = sum(s["user"] + s["sys"] for s in steady) / len(steady)
    sys_s = sum(s["sys"] for s in steady) / len(steady)
    st = r["data"]
    labels = st["label_tokens"] / st["rows"] * 4  # mean labelled tokens of 4 packed rows
    flops = flops_per_step(spec["model_dir"], 4 * 512, 4, 512, labels)
    achieved = flops["total"] / cpu / 1e9
    record = {"label": args.label, "env": args.env, "set": args.set, "compile": args.compile,
              "malloc": env.get("_TUNESMITH_ALLOCATOR_ACTIVE", "glibc").split(":")[0], "steps": r["steps"], "losses": r["losses"],
              "peak_mb": r["peak_mb"], "cpu_s_per_step": round(cpu, 2), "sys_s_per_step": round(sys_s, 2),
              "bound_gflops": round(bound, 1), "flops_per_step": flops,
              "gflops": round(achieved, 1), "fraction_of_bound": round(achieved / bound, 3), "load_avg": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"{args.label or args.env}: {cpu:.2f} CPU s/step ({sys_s:.2f} sys), peak {r['peak_mb']:,.0f} MiB, "
          f"loss {r['losses'][-1]:.4f}, {achieved:.1f} GFLOP/s = {achieved / bound:.0%} of bound, minflt/step {sum(s['minflt'] for s in steady) / len(steady):,.0f}", flush=True)
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else []
    RESULTS_JSON.write_text(json.dumps(old + [record], indent=1) + "\n")


if __name__ == "__main__":
    main()
