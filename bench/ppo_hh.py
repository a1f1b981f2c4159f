"""PPO with a reward model on Anthropic HH-RLHF (issue 13, 6c): a `method: reward` run on short
single-turn harmless-base pairs, its accuracy and length bias on held-out pairs, then `method: ppo`
with a LoRA policy on other HH prompts scored by that reward model: the score, KL, length and
truncation by step, and the honest measure, held-out prompts scored before and after.

    python bench/ppo_hh.py --model DIR --out OUT [--rm-pairs 256] [--rm-steps 32] [--ppo-steps 24]
        [--new-tokens 64] [--rm-only | --skip-rm] [--skip-before] [--rm KEY=VALUE ...] [--ppo KEY=VALUE ...]
    python bench/ppo_hh.py --model DIR --out OUT --checkpoint OUT/ppo/checkpoints/step-N

DIR: a transformers directory of the model (SmolLM2-135M-Instruct, or the tiny test model). Pairs:
single-turn transcripts whose chosen and rejected are each under 500 characters and differ; the
first `--rm-pairs` train the reward model, the next 100 are held out. PPO prompts: first human
turns of all other transcripts, the first 64 held out (scored before and after, with the KL of the
trained policy's samples to the base measured on them), the next `--prompts` trained on. Writes OUT/rm.json and OUT/bench.json with everything reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import torch

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


def _pearson(x: list[float], y: list[float]) -> float:
    import statistics

    return round(statistics.correlation(x, y), 3) if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")


def length_bias(held_result: dict, held_f: Path) -> dict:
    """Does the reward model prefer length? On the held-out pairs: `tunesmith score`'s length bias (in
    tokens: how often the longer response scores higher, corr of the gaps, slope per token) and how
    often the chosen response is the longer one (in characters), for contrast."""
    rows = [json.loads(x) for x in held_f.read_text().splitlines()]
    chosen_longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    return {**held_result.get("length_bias", {}), "chosen_is_longer": round(chosen_longer, 3)}


@torch.no_grad()
def completion_kl(model, prompts: list[list[int]], comps: list[list[int]], batch: int = 16) -> list[float]:
    """Per completion, sum over its tokens of log pi(y_t) - log ref(y_t) at temperature 1: with y sampled
    from pi this is an unbiased estimate of the sequence KL(pi || ref). ref = the same model with its
    adapter disabled; [] when the model has none (the base model: KL 0 by definition)."""
    disable = getattr(model, "disable_adapter", None)
    if not callable(disable):
        return []

    def logps() -> list[float]:
        out = []
        for i in range(0, len(prompts), batch):
            rows = [p + c for p, c in zip(prompts[i : i + batch], comps[i : i + batch])]
            width = max(map(len, rows))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # right padding: causal, never attended
            att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            lp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), dim=-1)
            for b, (p, c) in enumerate(zip(prompts[i : i + batch], comps[i : i + batch])):
                pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)  # logits at t predict token t + 1
                out.append(float(lp[b, pos, torch.tensor(c)].sum()) if c else 0.0)
        return out

    pol = logps()
    with disable():
        ref = logps()
    return [a - b for a, b in zip(pol, ref)]


@torch.no_grad()
def heldout_scores(model_dir: str, adapter: Path | None, rm_dir: Path, prompts_f: Path, samples: int = 2,
                   max_new_tokens: int = 64, seed: int = 4321) -> dict:
    """The honest measure: completions of held-out prompts (never trained on) sampled at temperature 1
    with the same seeds before and after, scored by the reward model. Also length and truncation,
    and corr(score, length) over these completions (a length-loving RM shows up here)."""
    import statistics

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.objectives.rl.data import prompt_ids
    from tunesmith.objectives.rl.rewards import RewardModelReward
    from tunesmith.objectives.rl.rollout.generation import sample

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None and (adapter / "trainable.safetensors").is_file():  # a run's checkpoints/step-N: its LoRA (config.yaml) + trainable.safetensors
        from tunesmith.adapters import apply_adapter
        from tunesmith.config import load_config

        model = apply_adapter(model, load_config(adapter.parents[1] / "config.yaml", []).adapter)
        w = {k.removeprefix("model."): v for k, v in load_file(str(adapter / "trainable.safetensors")).items() if k.startswith("model.")}
        missing = set(w) - set(dict(model.named_parameters()))
        if missing or not w:
            raise SystemExit(f"{adapter}: weights do not fit the run's adapter, e.g. {sorted(missing)[:2]}")
        model.load_state_dict(w, strict=False)
    elif adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    texts = [json.loads(x)["prompt"] for x in prompts_f.read_text().splitlines()]
    ids = [prompt_ids(tok, [{"role": "user", "content": t}]) for t in texts for _ in range(samples)]
    eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})
    done = sample(model, ids, tokenizer=tok, eos_ids=eos, pad_id=tok.pad_token_id, max_new_tokens=max_new_tokens,
                  temperature=1.0, top_p=1.0, stop=[], seed=seed, batch_size=32)
    comps = tok.batch_decode([c.ids for c in done], skip_special_tokens=True)
    rm = RewardModelReward(str(rm_dir), torch.device("cpu"))
    scores = []
    for i in range(0, len(comps), 16):
        scores += rm([t for t in texts for _ in range(samples)][i : i + 16], comps[i : i + 16])
    lens = [float(len(c.ids)) for c in done]
    kl = completion_kl(model, ids, [c.ids for c in done])
    kl_out = {"kl_sequence": round(statistics.fmean(kl), 3), "kl_sequence_sem": round(statistics.stdev(kl) / len(kl) ** 0.5, 3),
              "kl_per_token": round(sum(kl) / max(1.0, sum(lens)), 4)} if kl else {"kl_sequence": 0.0}
    return {"completions": len(done), **kl_out, "rm_score": round(statistics.fmean(scores), 4),
            "rm_score_sem": round(statistics.stdev(scores) / len(scores) ** 0.5, 4),
            "length": round(statistics.fmean(lens), 1), "truncated": round(sum(c.truncated for c in done) / len(done), 3),
            "corr(score, length)": _pearson(scores, lens), "examples": [[texts[0], comps[0]], [texts[1], comps[2]]]}


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
    ap.add_argument("--rm-train-accuracy", action="store_true", help="also score the reward model's own training pairs")
    ap.add_argument("--new-tokens", type=int, default=64, help="PPO and held-out completion length cap")
    ap.add_argument("--skip-before", action="store_true", help="do not score the held-out prompts with the base model")
    ap.add_argument("--checkpoint", help="only score the held-out prompts with this PPO checkpoints/step-N (or adapter dir)")
    a = ap.parse_args()
    from tunesmith.score import score
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    out = Path(a.out)
    train_f, held_f, prompts_f, held_prompts_f = write_data(out / "data", a.rm_pairs, a.prompts)
    common = [f"model.path={a.model}", "adapter.type=lora", "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0.0",
              "train.progress=false", "train.save_every=0", "train.warmup_steps=0", "train.scheduler=constant"]
    result: dict = {}
    if a.checkpoint:
        after = heldout_scores(a.model, Path(a.checkpoint), out / "rm", held_prompts_f, max_new_tokens=a.new_tokens)
        print(json.dumps({"checkpoint": a.checkpoint, "heldout_after": after}), flush=True)
        return
    if not a.skip_rm:
        t0 = time.process_time()
        train(None, [*common, "method=reward", f"data.train={train_f}", "data.max_length=256", "data.on_error=skip",
                     "train.micro_batch_size=8", "train.grad_accum_steps=1", f"train.max_steps={a.rm_steps}", "train.lr=3e-4",
                     f"output_dir={out / 'rm'}", *a.rm], overwrite=True)
        result["rm_train_cpu_s"] = round(time.process_time() - t0, 1)
    if a.skip_rm and (out / "rm.json").is_file():  # measured when it was trained
        result.update(json.loads((out / "rm.json").read_text()))
    else:
        rm_log = [r for r in read_metrics(out / "rm" / "metrics.jsonl") if "loss" in r]
        result["rm_loss_first_last"] = [round(rm_log[0]["loss"], 4), round(rm_log[-1]["loss"], 4)]
        if a.rm_train_accuracy:  # scoring every training pair costs as much CPU as a third of the training
            result["rm_train_accuracy"] = score(out / "rm", train_f)["accuracy"]
    if "rm_length_bias_heldout_pairs" not in result:
        held_res = score(out / "rm", held_f)
        result["rm_heldout_accuracy"] = held_res["accuracy"]
        result["rm_length_bias_heldout_pairs"] = length_bias(held_res, held_f)
    print("reward model:", result, flush=True)
    (out / "rm.json").write_text(json.dumps(result, indent=1))
    if a.rm_only:
        return
    if not a.skip_before:
        t0 = time.process_time()
        result["heldout_before"] = heldout_scores(a.model, None, out / "rm", held_prompts_f, max_new_tokens=a.new_tokens)
        result["heldout_before"]["cpu_s"] = round(time.process_time() - t0, 1)
        print("held-out prompts, base model:", json.dumps(result["heldout_before"]), flush=True)
    t0 = time.process_time()
    train(None, [*common, "method=ppo", f"data.train={prompts_f}", f"rl.rewards=[{{reward_model: {out / 'rm'}}}]",
                 "rl.num_generations=1", f"rl.max_new_tokens={a.new_tokens}", "rl.max_prompt_length=128", "rl.temperature=1.0",
                 "rl.beta=0.05", "rl.samples_every=4", "train.micro_batch_size=8", "train.grad_accum_steps=1",
                 f"train.max_steps={a.ppo_steps}", "train.lr=2e-4", f"output_dir={out / 'ppo'}", *a.ppo], overwrite=True)
    result["ppo_train_cpu_s"] = round(time.process_time() - t0, 1)
    keys = ("reward", "kl", "completion_length", "truncated_fraction", "value_loss", "approx_kl", "clip_fraction", "entropy")
    result["ppo_steps"] = [{"step": r["step"], **{k: round(r[k], 4) for k in keys if k in r}}
                           for r in read_metrics(out / "ppo" / "metrics.jsonl") if "reward" in r]
    result["heldout_after"] = heldout_scores(a.model, out / "ppo" / "adapter", out / "rm", held_prompts_f, max_new_tokens=a.new_tokens)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
