"""Predicted vs measured peak memory of real `tunesmith train` runs on this CPU.

    python bench/estimate_accuracy.py --tiny MODEL_DIR [--real SMOLLM2_DIR] [--out bench/results/estimate_accuracy.json]

Each case runs `tunesmith.api.train` for a few steps in a fresh process. The child reads its RSS after
importing torch/transformers/peft/accelerate/bitsandbytes/tunesmith (the framework baseline), trains,
then reads VmHWM (the process's RSS high-water mark). The estimate is computed with that measured
baseline as its framework term, so two errors are reported: on the whole peak, and on the part above
the baseline (what the estimator models: weights, adapter, gradients, optimizer, activations, loss).
Data: GSM8K from ../shared/data (SFT, packed rows of max_length) or the same text as `pretrain` blocks
(full rows of max_length, no padding, no mask); HH-RLHF pairs for DPO.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNESMITH_SHARED_DATA", "/work/shared/data"))


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def child(config_path: str) -> None:
    import accelerate  # noqa: F401
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import tunesmith.api as api
    import tunesmith.train.run  # noqa: F401

    baseline = _status("VmRSS")
    t0 = time.time()
    rates: list[float] = []
    summary = api.train(config_path, overwrite=True, callbacks=[lambda step, rec: rates.append(rec["tokens_per_s"])])
    steady = sorted(rates[1:] or rates)[len(rates[1:] or rates) // 2]  # median after the first step
    print("RESULT " + json.dumps({"baseline": baseline, "peak": _status("VmHWM"), "seconds": time.time() - t0,
                                  "steps": summary["steps"], "tokens": summary["tokens"], "tokens_per_s": steady}), flush=True)


def config_for(model: str, case: dict, out_dir: str) -> dict:
    method = case.get("method", "sft")
    cfg = {"model": {"path": model, "quantization": "nf4" if case["how"] == "qlora" else "none"},
           "method": method,
           "adapter": {"type": "none" if case["how"] == "full" else "lora", **({"r": 16, "alpha": 32} if case["how"] != "full" else {})},
           "train": {"max_steps": case.get("steps", 5), "micro_batch_size": case["batch"], "grad_accum_steps": 1,
                     "gradient_checkpointing": case["gc"], "save_every": 0, "progress": False, "lr": 1e-4},
           "output_dir": out_dir}
    if method == "dpo":
        cfg["data"] = {"train": str(SHARED / "hh-rlhf/harmless-base-test.jsonl.gz"), "max_length": case["seq"],
                       "overlength": "truncate", "on_error": "skip"}
        cfg["dpo"] = {"max_prompt_length": case["seq"] // 2}
    elif method == "pretrain":
        cfg["data"] = {"train": str(SHARED / "gsm8k/train.jsonl"), "format": "text", "columns": {"text": "answer"},
                       "max_length": case["seq"]}
    else:
        cfg["data"] = {"train": str(SHARED / "gsm8k/train.jsonl"), "format": "alpaca",
                       "columns": {"instruction": "question", "output": "answer"}, "max_length": case["seq"], "packing": True}
    return cfg


def measure(cfg: dict, malloc: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        if malloc == "mmap":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        elif malloc in ("jemalloc", "mimalloc"):  # what `tunesmith train` re-executes under (train/allocator.py)
            sys.path.insert(0, str(ROOT / "src"))
            from tunesmith.train import allocator  # noqa: PLC0415

            env = allocator.decide({**env, allocator.CHOICE_ENV: malloc}).env
        r = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, env=env)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"run failed:\n{r.stderr[-3000:]}")
        return json.loads(line[7:])


def predict(cfg: dict, baseline: int, malloc: str) -> dict:
    from tunesmith.config import validate_config
    from tunesmith.estimate import estimate_plan, model_shape, plan_from_config
    from tunesmith.estimate.devices import this_cpu

    rc = validate_config(cfg)
    plan = replace(plan_from_config(rc, target="cpu"), allocator=malloc)
    est = estimate_plan(model_shape(rc.model.path), plan, this_cpu(), overhead=baseline)
    return {"peak": est.peak_bytes, "terms": {t.name: t.bytes for t in est.breakdown.terms}, "flops": est.flops["total"]}


CASES = [
    # name, model key, how, method, batch, seq, gc
    *[dict(model="tiny", how=h, method=m, batch=4, seq=512, gc=gc) for h in ("full", "lora", "qlora")
      for m in ("sft", "pretrain") for gc in (False, True)],
    dict(model="tiny", how="lora", method="sft", batch=8, seq=1024, gc=False),
    dict(model="tiny", how="lora", method="dpo", batch=4, seq=512, gc=False),
    dict(model="real", how="lora", method="sft", batch=4, seq=512, gc=False, steps=3),
    dict(model="real", how="lora", method="sft", batch=4, seq=512, gc=True, steps=3),
    dict(model="real", how="lora", method="pretrain", batch=4, seq=512, gc=False, steps=3),
    dict(model="real", how="qlora", method="sft", batch=4, seq=512, gc=False, steps=3),
    dict(model="real", how="full", method="sft", batch=2, seq=512, gc=False, steps=3),
]


def table(path: Path, models: dict) -> None:
    """Markdown rows: predictions recomputed with the current estimator from the stored measurements."""
    print("| model | method | adapter | B×T | grad ckpt | malloc | steps | measured peak | predicted | error | above baseline: measured / predicted / error |")
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---|")
    worst = 0.0
    for r in json.loads(path.read_text()):
        cfg = config_for(models[r["model"]], r, "/tmp/unused")
        p = predict(cfg, r["baseline"], r.get("malloc", "glibc"))["peak"]
        err, above = (p - r["measured"]) / r["measured"], r["measured"] - r["baseline"]
        worst = max(worst, abs(err))
        print(f"| {r['model']} | {r['method']} | {r['how']} | {r['batch']}×{r['seq']} | {'on' if r['gc'] else 'off'} | {r.get('malloc', 'glibc')} | {r.get('steps', 5)} "
              f"| {r['measured'] / 2**20:,.0f} MiB | {p / 2**20:,.0f} MiB | {err:+.1%} | {above / 2**20:,.0f} / {(p - r['baseline']) / 2**20:,.0f} MiB / "
              f"{(p - r['measured']) / max(above, 1):+.1%} |")
    print(f"\nworst |error| on the whole peak: {worst:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--tiny", help="tiny model directory (tunesmith init-model --size small)")
    ap.add_argument("--real", help="SmolLM2-135M-Instruct as a transformers directory")
    ap.add_argument("--only", default="", help="comma-separated case indices")
    ap.add_argument("--malloc", default="glibc", choices=["glibc", "mmap", "jemalloc", "mimalloc"],
                    help="mmap: run with MALLOC_MMAP_THRESHOLD_=65536; jemalloc/mimalloc: preloaded as tunesmith train does")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of the stored rows, re-predicted")
    ap.add_argument("--out", default=str(ROOT / "bench/results/estimate_accuracy.json"))
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    if a.table:
        return table(Path(a.out), {"tiny": a.tiny, "real": a.real})
    models = {"tiny": a.tiny, "real": a.real}
    rows = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else []
    picked = [int(i) for i in a.only.split(",") if i] or range(len(CASES))
    for i in picked:
        case = {**CASES[i], "malloc": a.malloc}
        if not models[case["model"]]:
            continue
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = config_for(models[case["model"]], case, run_dir + "/run")
            m = measure(cfg, a.malloc)
        p = predict(cfg, m["baseline"], a.malloc)
        row = {**case, "measured": m["peak"], "baseline": m["baseline"], "predicted": p["peak"],
               "err_total": (p["peak"] - m["peak"]) / m["peak"],
               "err_above_baseline": (p["peak"] - m["peak"]) / max(1, m["peak"] - m["baseline"]),
               "terms": p["terms"], "seconds": m["seconds"], "tokens": m["tokens"], "flops_per_micro_batch": p["flops"],
               "tokens_per_s": m.get("tokens_per_s"),
               # achieved FLOP/s over this CPU's 230 GFLOP/s bound: what calibrates estimate.core.UTILISATION["cpu"]
               "utilisation": (p["flops"] / (case["batch"] * case["seq"] * (2 if case["method"] == "dpo" else 1)))
               * m["tokens_per_s"] / 230e9 if m.get("tokens_per_s") else None}
        rows = [r for r in rows if {k: r.get(k) for k in case} != case] + [row]
        print(f"{i:2d} {a.malloc:5} {case['model']:5} {case['how']:6} {case['method']:9} B{case['batch']} T{case['seq']} gc={case['gc']!s:5} "
              f"measured {m['peak'] / 2**20:8.0f} MiB (baseline {m['baseline'] / 2**20:.0f}) predicted {p['peak'] / 2**20:8.0f} MiB "
              f"err {row['err_total']:+.1%} (above baseline {row['err_above_baseline']:+.1%})", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
