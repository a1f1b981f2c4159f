"""GRPO + LoRA on SmolLM2-135M-Instruct, arithmetic with a required `#### N` answer: the reward
curve of the run and held-out accuracy (greedy) and pass@1 / pass@8 (8 samples at temperature 1)
before and after.

    python bench/grpo_smollm2.py --model DIR --out RUN_DIR [--task add] [--steps 30] [key=value overrides]
    python bench/grpo_smollm2.py --model DIR --out PROBE_DIR --probe add,add2,addsub,mul [--probe-prompts 24]
    python bench/grpo_smollm2.py --model DIR --out RUN_DIR --task T --checkpoint RUN_DIR/checkpoints/step-N

--probe measures the base model's pass@1 and pass@8 on each task (which task has room for RL:
pass@1 low-to-middling, pass@8 high); --checkpoint measures a run stopped before its end.

DIR: a transformers directory of the model (on branches with the real-model issue,
`tunesmith convert smollm2-135m-instruct --out DIR`). Runs on CPU in minutes with 1 thread per core.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from arith_data import write  # noqa: E402


def _from_checkpoint(model, ckpt: Path):
    """The run's LoRA (its config.yaml) with the weights of a checkpoint's trainable.safetensors
    (wrapper names: `model.` + the PEFT model's): a run stopped at its time budget is still measured."""
    from safetensors.torch import load_file

    from tunesmith.adapters import apply_adapter
    from tunesmith.config import load_config

    cfg = load_config(ckpt.parents[1] / "config.yaml", [])
    peft = apply_adapter(model, cfg.adapter)
    weights = {k.removeprefix("model."): v for k, v in load_file(str(ckpt / "trainable.safetensors")).items()}
    missing = set(weights) - set(dict(peft.named_parameters()))
    if missing:
        raise SystemExit(f"{ckpt}: {len(missing)} weights do not fit the run's adapter, e.g. {sorted(missing)[:2]}")
    peft.load_state_dict(weights, strict=False)
    return peft


@torch.no_grad()
def accuracy(model_dir: str, adapter: str | None, rows: list[dict], max_new_tokens: int = 48) -> dict:
    """Greedy held-out accuracy (answer = the number after `####`, else the last number) and format
    rate. `adapter`: a PEFT adapter directory, or a run's checkpoints/step-N directory."""
    from tunesmith.evaluate.metrics import answers_match, extract_answer
    from tunesmith.objectives.rl.data import prompt_ids

    model, tok = _load(model_dir, adapter)
    prompts = [prompt_ids(tok, r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    T = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(out[:, T:], skip_special_tokens=True)
    correct = [answers_match(extract_answer(t, "gsm8k"), r["answer"]) for t, r in zip(texts, rows)]
    formatted = [re.search(r"####\s*-?\d+", t) is not None for t in texts]
    return {"n": len(rows), "correct": sum(correct), "accuracy": sum(correct) / len(rows),
            "format": sum(formatted) / len(rows), "example": texts[0]}


def _load(model_dir: str, adapter: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter and (Path(adapter) / "trainable.safetensors").is_file():
        model = _from_checkpoint(model, Path(adapter))
    elif adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval(), tok


@torch.no_grad()
def pass_at_k(model_dir: str, adapter: str | None, rows: list[dict], k: int = 8, max_new_tokens: int = 32,
              seed: int = 1234) -> dict:
    """k completions per prompt at temperature 1 through tunesmith's in-loop sampler: pass@1 (mean
    correctness of all samples, the unbiased estimate), pass@k (prompts with at least one correct),
    the format rate (`#### N` present) and the fraction of prompts whose k samples are all right or
    all wrong (GRPO groups with no gradient)."""
    from tunesmith.evaluate.metrics import answers_match, extract_answer
    from tunesmith.objectives.rl.data import prompt_ids
    from tunesmith.objectives.rl.rollout.generation import sample

    model, tok = _load(model_dir, adapter)
    eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})
    prompts = [prompt_ids(tok, r["prompt"]) for r in rows for _ in range(k)]
    done = sample(model, prompts, tokenizer=tok, eos_ids=eos, pad_id=tok.pad_token_id, max_new_tokens=max_new_tokens,
                  temperature=1.0, top_p=1.0, stop=[], seed=seed, batch_size=64)
    texts = tok.batch_decode([c.ids for c in done], skip_special_tokens=True)
    ok = [answers_match(extract_answer(t, "gsm8k"), rows[i // k]["answer"]) for i, t in enumerate(texts)]
    per = [sum(ok[i * k : (i + 1) * k]) for i in range(len(rows))]
    return {"prompts": len(rows), "k": k, "pass@1": round(sum(ok) / len(ok), 3),
            "pass@k": round(sum(c > 0 for c in per) / len(rows), 3),
            "format": round(sum(re.search(r"####\s*-?\d+", t) is not None for t in texts) / len(texts), 3),
            "no_spread_groups": round(sum(c in (0, k) for c in per) / len(rows), 3),
            "truncated": round(sum(c.truncated for c in done) / len(done), 3), "example": texts[0]}


def _held(a) -> list[dict]:
    _, test_file = write(Path(a.out + "-data"), a.task)
    return [json.loads(x) for x in test_file.read_text().splitlines()][: a.held_out]


def _measure(a, adapter: str | None, held: list[dict], sampled: dict | None = None) -> dict:
    """Greedy accuracy on `held`, pass@1 / pass@8 on its first --pass-prompts rows (`sampled`: that
    result already measured, e.g. by --probe on the same rows with the same seeds)."""
    t0 = time.process_time()
    out = {"greedy": accuracy(a.model, adapter, held, a.eval_tokens),
           "sampled": sampled or pass_at_k(a.model, adapter, held[: a.pass_prompts], 8, a.eval_tokens)}
    out["cpu_s"] = round(time.process_time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="add", help="arith_data.TASKS: add, add2, addsub, mul")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--held-out", type=int, default=100, help="held-out prompts for greedy accuracy")
    ap.add_argument("--pass-prompts", type=int, default=24, help="held-out prompts for pass@1 / pass@8")
    ap.add_argument("--probe-json", help="a --probe run's probe.json: the base model's pass@k on this task (same "
                    "rows and seeds when --pass-prompts equals its --probe-prompts), not measured again")
    ap.add_argument("--eval-tokens", type=int, default=32, help="max new tokens when measuring")
    ap.add_argument("--probe", help="comma-separated tasks: measure the base model's pass@1 / pass@8 on each, no training")
    ap.add_argument("--probe-prompts", type=int, default=24)
    ap.add_argument("--checkpoint", help="only measure this checkpoints/step-N (or adapter dir) of a run in --out")
    ap.add_argument("--skip-before", action="store_true", help="do not measure the base model before training")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    if a.probe:
        res = {}
        for task in a.probe.split(","):
            _, test_file = write(Path(a.out) / task, task)
            rows = [json.loads(x) for x in test_file.read_text().splitlines()][: a.probe_prompts]
            t0 = time.process_time()
            res[task] = pass_at_k(a.model, None, rows, 8, a.eval_tokens)
            res[task]["cpu_s"] = round(time.process_time() - t0, 1)
            print(task, json.dumps(res[task]), flush=True)
        Path(a.out, "probe.json").write_text(json.dumps(res, indent=1))
        return
    held = _held(a)
    if a.checkpoint:
        print(json.dumps({"checkpoint": a.checkpoint, "after": _measure(a, a.checkpoint, held)}), flush=True)
        return
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    train_file, _ = write(Path(a.out + "-data"), a.task)
    probed = None
    if a.probe_json:
        probed = json.loads(Path(a.probe_json).read_text())[a.task]
        if probed["prompts"] != a.pass_prompts:
            raise SystemExit(f"--probe-json measured {probed['prompts']} prompts, --pass-prompts is {a.pass_prompts}")
    before = None if a.skip_before else _measure(a, None, held, probed)
    print("before", json.dumps(before), flush=True)
    t0 = time.process_time()
    train("examples/grpo_lora.yaml", [f"model.path={a.model}", f"data.train={train_file}", f"output_dir={a.out}",
                                      f"train.max_steps={a.steps}", "train.progress=false", *a.overrides], overwrite=True)
    cpu = time.process_time() - t0
    after = _measure(a, str(Path(a.out) / "adapter"), held)
    rec = read_metrics(Path(a.out) / "metrics.jsonl")
    curve = [(r["step"], round(r["reward"], 3), round(r.get("kl", 0.0), 4), round(r["completion_length"], 1)) for r in rec]
    result = {"task": a.task, "before": before, "after": after, "train_cpu_s": round(cpu, 1),
              "curve (step, reward, kl, length)": curve}
    (Path(a.out) / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
