"""tunesmith's GRPO against TRL's GRPOTrainer + PEFT on the CPU: completions/s, peak memory and the
reward curve of each, same model, prompts, group size, lengths and LoRA.

    .venv/bin/python bench/grpo_vs_trl.py [--steps 15] [--model DIR] [--repeats 3] [--tag smollm2]

Needs `trl` (the `bench` extra). Each framework runs in a fresh subprocess (`--worker`), so its peak
memory is its own ru_maxrss. Model: the "small" tiny Llama (hidden 256, 4 layers, vocab 2048,
untrained, seeded) unless --model is given. Both: LoRA r 16 / alpha 32 / dropout 0 on every linear
layer, 4 prompts x 4 generations = 16 completions per step, max 16 new tokens, temperature 1, no
top-k / top-p, beta 0 (no reference pass in either), loss_type dapo, scale_rewards group, lr 1e-3
constant, AdamW, clip 1.0, fp32, one torch thread, no gradient accumulation. Reward: the built-in
`length` reward (1 - |chars - 24| / 24, at least -1), which an untrained model can climb. Sampling
RNGs differ between the frameworks, so the curves agree in trend, not step by step.

With --repeats N the frameworks run strictly alternating (t, trl, t, trl, ...: bench/common.py) and
each framework's run with the median CPU seconds per step is kept (its memory, reward and lengths
with it). Measured: completions/s over steps 3..N (wall clock at each step's end: generation, scoring, the
training forward/backward and the optimizer inside), peak MB = ru_maxrss at the end minus after
the imports and one model load, mean reward of the first and last 3 steps, CPU seconds per step
(user + sys, the measure that survives a shared machine) and the mean completion length in tokens
(tunesmith's `completion_length`, TRL's `completions/mean_length`: both must generate as much for the
speed to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alternating, load_avg, machine, maxrss_mb, median_run, tunesmith_malloc, versions

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results" / "grpo_vs_trl.json"
G, PROMPTS, NEW, TARGET, LR = 4, 4, 16, 24, 1e-3
WORDS = ["river", "stone", "light", "tree", "cloud", "sun", "moon", "cat", "dog", "bird", "road", "fire", "rain", "snow"]


def length_reward(completions) -> list[float]:
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [max(-1.0, 1 - abs(len(t) - TARGET) / TARGET) for t in texts]


def baseline(model_dir: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return maxrss_mb()


def worker_tunesmith(spec: dict) -> dict:
    import peft  # noqa: F401

    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    base = baseline(spec["model_dir"])
    times, cpu, rewards, lengths, peak = [], [], [], [], [0.0]

    def on_step(step, record):
        times.append(time.perf_counter())
        cpu.append(time.process_time())
        rewards.append(record["reward"])
        lengths.append(record["completion_length"])
        peak[0] = maxrss_mb()

    cfg = {"model": {"path": spec["model_dir"], "dtype": "fp32"}, "method": "grpo", "data": {"train": [spec["data"]]},
           "adapter": {"type": "lora", "target_modules": "all-linear", "r": 16, "alpha": 32, "dropout": 0.0},
           "rl": {"num_generations": G, "max_new_tokens": NEW, "rewards": ["length"], "target_length": TARGET,
                  "loss_type": "dapo", "scale_rewards": "group", "beta": 0.0, "samples_every": 0},
           "train": {"max_steps": spec["steps"], "micro_batch_size": PROMPTS, "lr": LR, "scheduler": "constant",
                     "warmup_steps": 0, "precision": "fp32", "save_every": 0, "progress": False, "seed": 0},
           "output_dir": spec["run_dir"]}
    cfg["rl"].update(spec.get("rl", {}))
    train(validate_config(cfg), overwrite=True, callbacks=[on_step])
    return {"times": times, "cpu": cpu, "rewards": rewards, "lengths": lengths, "peak_mb": peak[0] - base}


def worker_trl(spec: dict) -> dict:
    import datasets
    import peft
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    datasets.disable_progress_bars()
    base = baseline(spec["model_dir"])
    rows = [json.loads(x) for x in Path(spec["data"]).read_text().splitlines()]
    ds = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    args = GRPOConfig(output_dir=spec["run_dir"], per_device_train_batch_size=PROMPTS * G, num_generations=G,
                      generation_batch_size=PROMPTS * G, max_completion_length=NEW, temperature=1.0, top_p=1.0, top_k=0,
                      beta=0.0, loss_type="dapo", scale_rewards="group", learning_rate=LR, lr_scheduler_type="constant",
                      warmup_steps=0, max_steps=spec["steps"], logging_steps=1, save_strategy="no", report_to=[],
                      bf16=False, fp16=False, use_cpu=True, seed=0, disable_tqdm=True, shuffle_dataset=False,
                      model_init_kwargs={"dtype": "float32"}, **spec.get("trl", {}))
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    times, cpu, rewards, lengths, peak = [], [], [], [], [0.0]

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter())
            cpu.append(time.process_time())
            peak[0] = maxrss_mb()

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))
                lengths.append(float(logs["completions/mean_length"]))

    def length(prompts, completions, **kw):
        return length_reward(completions)

    tok = transformers.AutoTokenizer.from_pretrained(spec["model_dir"])
    GRPOTrainer(model=spec["model_dir"], reward_funcs=[length], args=args, train_dataset=ds, processing_class=tok,
                peft_config=lora, callbacks=[Timer()]).train()
    return {"times": times, "cpu": cpu, "rewards": rewards, "lengths": lengths, "peak_mb": peak[0] - base}


def prepare(tmp: Path, model: str | None) -> tuple[str, Path]:
    """The model directory (the seeded "small" tiny Llama unless given) and the prompt file."""
    if model is None:
        from tunesmith.models.tiny import init_model

        model = str(init_model(tmp / "small", size="small", seed=0))
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write a line about the {w}."}) + "\n" for w in WORDS * 8))
    return model, data


def summarise(r: dict, steps: int) -> dict:
    t = r["times"]
    dt = t[-1] - t[1]
    per_step = PROMPTS * G
    c = r["cpu"]
    return {"completions_per_s": round(per_step * (len(t) - 2) / dt, 2), "s_per_step": round(dt / (len(t) - 2), 3),
            "cpu_s_per_step": round((c[-1] - c[1]) / (len(c) - 2), 3),
            "peak_mb": round(r["peak_mb"], 1), "reward_first3": round(sum(r["rewards"][:3]) / 3, 3),
            "reward_last3": round(sum(r["rewards"][-3:]) / 3, 3), "rewards": [round(x, 3) for x in r["rewards"]],
            "completion_length": round(sum(r["lengths"]) / len(r["lengths"]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--model")
    ap.add_argument("--worker")
    ap.add_argument("--spec")
    ap.add_argument("--only", choices=["tunesmith", "trl"], help="run one framework (CPU-time checks of a change)")
    ap.add_argument("--rl", nargs="*", default=[], help="tunesmith rl.KEY=VALUE settings, e.g. kl_every=0")
    ap.add_argument("--trl", nargs="*", default=[],
                    help="TRL GRPOConfig KEY=VALUE overrides, e.g. gradient_checkpointing=false (TRL's GRPO default is true)")
    ap.add_argument("--tag", default="", help="results/grpo_vs_trl{-TAG}.json")
    ap.add_argument("--repeats", type=int, default=1, help="runs per framework, strictly alternating; the median is kept")
    a = ap.parse_args()
    if a.worker:
        spec = json.loads(Path(a.spec).read_text())
        import torch

        torch.set_num_threads(1)
        out = (worker_tunesmith if a.worker == "tunesmith" else worker_trl)(spec)
        Path(spec["out"]).write_text(json.dumps(out))
        return
    tmp = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model, data = prepare(tmp, a.model)
    import yaml

    rl = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.rl)}
    trl_args = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.trl)}
    info = {"trl_overrides": trl_args, "versions": versions(), "machine": machine(), "model": a.model or "tiny small", "steps": a.steps,
            "repeats": a.repeats, "rl": rl, "malloc_mmap_threshold_env": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    runs: dict[str, list[dict]] = {}
    for rep, name in alternating([a.only] if a.only else ["tunesmith", "trl"], a.repeats):  # t, trl, t, trl, ...
        spec = {"model_dir": model, "data": str(data), "steps": a.steps, "run_dir": str(tmp / f"run-{name}-{rep}"),
                "out": str(tmp / f"{name}-{rep}.json"), "rl": rl, "trl": trl_args}
        (tmp / f"{name}-spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if name == "tunesmith":
            env = tunesmith_malloc(env)  # the malloc `tunesmith train` picks (bench/common.py)
        subprocess.run([sys.executable, __file__, "--worker", name, "--spec", str(tmp / f"{name}-spec.json")], check=True, env=env)
        runs.setdefault(name, []).append(summarise(json.loads(Path(spec["out"]).read_text()), a.steps))
        print(name, rep, json.dumps(runs[name][-1]), flush=True)
    results = {name: median_run(r, "cpu_s_per_step") for name, r in runs.items()}  # the run with the median CPU s/step
    if not a.only:
        results["speedup"] = round(results["tunesmith"]["completions_per_s"] / results["trl"]["completions_per_s"], 2)
        results["cpu_speedup"] = round(results["trl"]["cpu_s_per_step"] / results["tunesmith"]["cpu_s_per_step"], 2)
    results["info"] = {**info, "load_avg_end": load_avg()}
    out = RESULTS_JSON.with_name(f"grpo_vs_trl-{a.tag}.json") if a.tag else RESULTS_JSON
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
