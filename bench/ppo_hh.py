"""PPO with a reward model on Anthropic HH-RLHF (issue 13, 6c): a `method: reward` run on short
single-turn harmless-base pairs, its accuracy on held-out pairs, then `method: ppo` with a LoRA
policy on other HH prompts scored by that reward model; the score and KL by step.

    python bench/ppo_hh.py --model DIR --out OUT [--rm-pairs 256] [--rm-steps 32] [--ppo-steps 24]
        [--rm KEY=VALUE ...] [--ppo KEY=VALUE ...]

DIR: a transformers directory of the model (SmolLM2-135M-Instruct, or the tiny test model). Rows:
single-turn transcripts whose chosen and rejected are each under 500 characters and differ; the
first `--rm-pairs` train the reward model, the next 100 are held out, the rest give PPO prompts.
Writes OUT/bench.json with everything reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

HH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def single_turn_pairs(path: Path, max_chars: int = 500) -> list[dict]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            c, rj = r["chosen"], r["rejected"]
            if c.count("\n\nHuman:") != 1 or rj.count("\n\nHuman:") != 1 or len(c) >= max_chars or len(rj) >= max_chars:
                continue
            pc, ac = c.split("\n\nAssistant:", 1)
            pr, ar = rj.split("\n\nAssistant:", 1)
            if pc != pr or ac.strip() == ar.strip() or not ac.strip() or not ar.strip():
                continue
            out.append({"prompt": pc.removeprefix("\n\nHuman:").strip(), "chosen": ac.strip(), "rejected": ar.strip()})
    return out


def first_human_turns(path: Path, max_chars: int = 300) -> list[str]:
    """The first human turn of every transcript (multi-turn ones too), deduplicated, in file order."""
    seen: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            h = json.loads(line)["chosen"].split("\n\nAssistant:", 1)[0].removeprefix("\n\nHuman:").strip()
            if h and len(h) < max_chars:
                seen.setdefault(h, None)
    return list(seen)


def write_data(out: Path, rm_pairs: int, n_prompts: int, n_heldout_prompts: int = 64) -> tuple[Path, Path, Path, Path]:
    """RM train pairs, 100 held-out pairs, then PPO prompts and held-out PPO prompts: first human
    turns of any transcript whose prompt is in neither RM split (single-turn pairs are only 549 of
    2,312 rows, so PPO draws its prompts from all of them)."""
    rows = single_turn_pairs(HH)
    if rm_pairs + 100 > len(rows):
        raise SystemExit(f"--rm-pairs {rm_pairs}: only {len(rows)} single-turn pairs, 100 of them held out")
    out.mkdir(parents=True, exist_ok=True)
    train, held = out / "rm_train.jsonl", out / "rm_heldout.jsonl"
    prompts, held_prompts = out / "ppo_prompts.jsonl", out / "ppo_heldout_prompts.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:rm_pairs]))
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[rm_pairs : rm_pairs + 100]))
    used = {r["prompt"] for r in rows[: rm_pairs + 100]}
    rest = [p for p in first_human_turns(HH) if p not in used]
    held_prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rest[:n_heldout_prompts]))
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rest[n_heldout_prompts:][:n_prompts]))
    return train, held, prompts, held_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rm-pairs", type=int, default=256)
    ap.add_argument("--rm-steps", type=int, default=32)
    ap.add_argument("--ppo-steps", type=int, default=24)
    ap.add_argument("--prompts", type=int, default=192)
    ap.add_argument("--rm", nargs="*", default=[], help="overrides of the reward-model run")
    ap.add_argument("--ppo", nargs="*", default=[], help="overrides of the PPO run")
    ap.add_argument("--skip-rm", action="store_true", help="reuse OUT/rm (already trained)")
    ap.add_argument("--rm-only", action="store_true", help="train and measure the reward model, no PPO")
    a = ap.parse_args()
    from tunesmith.score import score
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    out = Path(a.out)
    train_f, held_f, prompts_f, held_prompts_f = write_data(out / "data", a.rm_pairs, a.prompts)
    common = [f"model.path={a.model}", "adapter.type=lora", "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0.0",
              "train.progress=false", "train.save_every=0", "train.warmup_steps=0", "train.scheduler=constant"]
    result: dict = {}
    if not a.skip_rm:
        t0 = time.process_time()
        train(None, [*common, "method=reward", f"data.train={train_f}", "data.max_length=256", "data.on_error=skip",
                     "train.micro_batch_size=8", "train.grad_accum_steps=1", f"train.max_steps={a.rm_steps}", "train.lr=3e-4",
                     f"output_dir={out / 'rm'}", *a.rm], overwrite=True)
        result["rm_train_cpu_s"] = round(time.process_time() - t0, 1)
    rm_log = [r for r in read_metrics(out / "rm" / "metrics.jsonl") if "loss" in r]
    result["rm_loss_first_last"] = [round(rm_log[0]["loss"], 4), round(rm_log[-1]["loss"], 4)]
    result["rm_heldout_accuracy"] = score(out / "rm", held_f)["accuracy"]
    result["rm_train_accuracy"] = score(out / "rm", train_f)["accuracy"]
    print("reward model:", result, flush=True)
    (out / "rm.json").write_text(json.dumps(result, indent=1))
    if a.rm_only:
        return
    t0 = time.process_time()
    train(None, [*common, "method=ppo", f"data.train={prompts_f}", f"rl.rewards=[{{reward_model: {out / 'rm'}}}]",
                 "rl.num_generations=1", "rl.max_new_tokens=32", "rl.max_prompt_length=128", "rl.temperature=1.0",
                 "rl.beta=0.05", "rl.samples_every=4", "train.micro_batch_size=8", "train.grad_accum_steps=1",
                 f"train.max_steps={a.ppo_steps}", "train.lr=2e-4", f"output_dir={out / 'ppo'}", *a.ppo], overwrite=True)
    result["ppo_train_cpu_s"] = round(time.process_time() - t0, 1)
    rec = [r for r in read_metrics(out / "ppo" / "metrics.jsonl") if "reward" in r]
    result["ppo (step, score, kl, length, value_loss)"] = [
        (r["step"], round(r["reward"], 3), round(r.get("kl", float("nan")), 4), round(r["completion_length"], 1),
         round(r.get("value_loss", float("nan")), 4)) for r in rec]
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
