"""The quickstart's preference stage: DPO on top of the SFT model, with a before/after on held-out pairs.

1. `sft-merged/`: the SFT adapter merged into the pre-trained model (PEFT `merge_and_unload`), the
   model DPO starts from and its reference.
2. `data/pref_*.jsonl`: correct vs wrong answers to the past-tense instruction (preference_task.py);
   the held-out pairs use sentences that no training pair contains.
3. `dpo/`: DPO (sigmoid, beta 0.1) with a new LoRA adapter; the reference is sft-merged with the
   adapter disabled.
4. Before/after: on the held-out pairs, the share where the model gives the correct answer a higher
   log-probability than the wrong one, and the mean log-prob margin, without and with the DPO adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .preference_task import past_tense_pairs


def merge_sft(out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = out / "sft-merged"
    model = AutoModelForCausalLM.from_pretrained(out / "pretrain" / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, out / "sft" / "adapter").merge_and_unload()
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(out / "sft" / "adapter").save_pretrained(target)  # carries the training chat template
    return target


@torch.no_grad()
def preference_accuracy(model_dir: Path, adapter_dir: Path | None, pairs: list[dict]) -> dict:
    """Share of pairs where log π(chosen|x) > log π(rejected|x), and the mean margin, in one packed
    forward per 16 pairs (the same encoding as training)."""
    from transformers import AutoModelForCausalLM

    from ..data.encode import resolve_chat_template
    from ..data.preference import parse_preference_row
    from ..data.preference_encode import collate_pairs, encode_pair
    from ..data.readers import Row
    from ..models.loading import load_tokenizer
    from ..objectives.logps import SequenceLogps, sequence_logps

    tok = load_tokenizer(str(model_dir))
    resolve_chat_template(tok, "auto")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    wrapper = SequenceLogps(model.eval(), 1024)
    rows = [encode_pair(parse_preference_row(Row(p, f"pair {i}")), tok) for i, p in enumerate(pairs)]
    margins = []
    for i in range(0, len(rows), 16):
        b = collate_pairs(rows[i : i + 16], tok.pad_token_id)
        sums, _ = sequence_logps(wrapper, b)
        margins += (sums[0::2] - sums[1::2]).tolist()
    return {"accuracy": sum(m > 0 for m in margins) / len(margins), "mean_margin": sum(margins) / len(margins)}


def dpo_config(out: Path, train_file: Path, eval_file: Path, b):
    from ..config import validate_config

    return validate_config({
        "model": {"path": str(out / "sft-merged")},
        "method": "dpo",
        "preference": {"loss": "sigmoid", "beta": 0.1, "max_prompt_length": 64},
        "adapter": {"type": "lora", "r": b.dpo_lora_r, "alpha": 2 * b.dpo_lora_r, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [str(train_file)], "eval": [str(eval_file)], "max_length": 128},
        "train": {"lr": b.dpo_lr, "max_steps": b.dpo_steps, "micro_batch_size": b.micro_batch_size, "warmup_steps": b.dpo_steps // 10,
                  "eval_every": max(1, b.dpo_steps // 4), "save_every": 0, "precision": "fp32", "seed": b.seed},
        "output_dir": str(out / "dpo"),
    }, source="quickstart dpo config")


def run_dpo_stage(out: Path, b, train_fn) -> dict:
    """Merge, write the pairs, measure before, train, measure after; returns the numbers."""
    merged = merge_sft(out)
    train_pairs, eval_pairs = past_tense_pairs(b.dpo_train, b.dpo_eval, seed=b.seed + 1)
    files = {}
    for name, rows in (("pref_train", train_pairs), ("pref_eval", eval_pairs)):
        files[name] = out / "data" / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    before = preference_accuracy(merged, None, eval_pairs)
    summary = train_fn(dpo_config(out, files["pref_train"], files["pref_eval"], b))
    after = preference_accuracy(merged, out / "dpo" / "adapter", eval_pairs)
    return {"n_train": len(train_pairs), "n_eval": len(eval_pairs), "before": before, "after": after,
            "steps": b.dpo_steps, "summary": summary}


def dpo_section(r: dict) -> tuple[str, str]:
    b, a, n = r["before"], r["after"], r["n_eval"]
    text = "\n".join([
        f"Held-out preference pairs ({n}, sentences no training pair contains): the correct past-tense answer "
        "against a wrong one (the sentence copied unchanged, or another verb's past). *Accuracy* is the share of "
        "pairs where the model gives the correct answer the higher log-probability; *margin* the mean of "
        "log π(correct) − log π(wrong). *Before* is the SFT model (`sft-merged/`), *after* the same model with the "
        f"DPO adapter trained for {r['steps']} steps on {r['n_train']} pairs.",
        "",
        "| | before (SFT) | after (SFT + DPO) |",
        "|---|---:|---:|",
        f"| preference accuracy | {100 * b['accuracy']:.1f}% | {100 * a['accuracy']:.1f}% |",
        f"| mean log-prob margin | {b['mean_margin']:.3f} | {a['mean_margin']:.3f} |",
    ])
    return "Preference accuracy before and after DPO", text
