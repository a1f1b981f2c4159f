"""`tunesmith quickstart`: the whole workflow on a CPU in a few minutes, ending in a before/after table.

The phases, each an ordinary tunesmith stage whose output a person can open and rerun:

1. `base-init/`: a tiny Llama and its BPE tokenizer, trained on the built-in corpus (`init_model`).
2. `pretrain/`: full pre-training on that corpus (`method: pretrain`, packed text), so the model
   knows the words and the sentence shapes before it is asked to follow an instruction.
3. `data/task_*.jsonl`: an instruction task in alpaca rows (task.py).
4. `sft/`: LoRA fine-tuning of the pre-trained model on the task (`train(...)`, as `tunesmith train`).
5. Before/after: greedy answers to held-out prompts from the pre-trained base and from base + adapter,
   exact match and the eval loss of both, added to `sft/report.md`; `README.md` points to everything.
6. `dpo/`: DPO with LoRA on the SFT model (merged into `sft-merged/`) over correct vs wrong answers
   (`data/pref_*.jsonl`), and the preference accuracy on held-out pairs before and after, in
   `dpo/report.md` (dpo_stage.py).

Why this task. "Rewrite the sentence in the past tense": `Emma buys a green cup.` -> `Emma bought a
green cup.` The verb comes from the corpus (which has both "Anna finds a ball." and "Yesterday Anna
found a ball."), the rest is copied, and the eval sentences are combinations of name, verb, number,
colour and object that never occur in training: a model that only memorised its training answers
scores zero. Every sentence is six tokens, so each copied word sits at a fixed offset, which a
2-layer model learns through LoRA in a few hundred steps. Tried and dropped (tiny model, 200-400
LoRA steps): sentences of varying shape ("The red fox ...", "... in the morning.") and reversing
three names stayed near 0% exact match; "which name comes second?" reached ~40%. Pre-training is
what makes the copy learnable (the same LoRA run on the untrained model scores ~0%), and so is the
LoRA rank: on this 64-wide model r 16 stayed at 0-7% whatever the learning rate (1e-3 to 2e-2),
while r 64 (lr 2e-3) and full fine-tuning (lr 1e-3) both reach 100% on the 200 held-out prompts
(measured 2026-11-23; r 16 + `modules_to_save: [embed_tokens, lm_head]` also reaches 100%).

Everything is seeded (weights, corpus, task, data order) and generation is greedy, so a budget gives
the same numbers on every run on the same machine.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..console import say
from .report import result_section, samples_section, summary_text, write_readme
from .dpo_stage import dpo_section, run_dpo_stage
from .task import INSTRUCTION, past_tense_task

# Everything a quickstart (--tiny: run_quickstart, real model: real.run_real_quickstart) makes under
# `out`; --overwrite removes these and nothing else, so either quickstart may replace the other's run.
OUR_ENTRIES = ("base-init", "data", "pretrain", "sft", "sft-merged", "dpo", "README.md",
               "base", "merged", "gguf", "report.md", "summary.json")
# Openings the pre-trained model continues in pretrain/report.md, to show what pre-training taught.
SAMPLE_OPENINGS = ("The red fox", "Yesterday it was sunny.",
                   "Anna has two apples. Anna gets three more apples. Question: How many apples does Anna have? Answer:")


@dataclass(frozen=True)
class Budget:
    """How much work each phase does; `BUDGETS` holds the named ones."""
    size: str = "tiny"
    corpus_docs: int = 8000
    pretrain_steps: int = 400
    pretrain_lr: float = 3e-3
    task_train: int = 3000
    task_eval: int = 200
    sft_steps: int = 400
    sft_lr: float = 2e-3
    lora_r: int = 64  # = hidden size of the tiny model: at r 16 the copy is not learned (0-7%), at 64 it is
    micro_batch_size: int = 8
    max_length: int = 256
    seed: int = 0  # the model's weights, the corpus, the task rows and the data order
    dpo_train: int = 512
    dpo_eval: int = 100
    dpo_steps: int = 60
    dpo_lr: float = 2e-4  # the SFT model is already right: 2e-3 widened the margin but flipped 20% of pairs
    dpo_lora_r: int = 16


BUDGETS = {
    "default": Budget(),
    # For tests: the default's training (the copy is learned abruptly: 300 pre-training steps gave 12%,
    # 400 give 100%; 200 SFT steps gave 1%), with fewer eval rows and a shorter DPO stage.
    "test": Budget(task_eval=100, dpo_train=256, dpo_eval=64, dpo_steps=30),
}


def run_quickstart(out: str | Path, overwrite: bool = False, budget: str | Budget = "default") -> dict:
    """Run every phase into `out`; print a summary and return the before/after numbers, the phase
    timings (seconds) and the paths of what was written."""
    import torch

    from ..train.report import write_report

    budget_name = budget if isinstance(budget, str) else "custom"
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise UserError(f"unknown quickstart budget {budget!r}; valid: {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    out = Path(out)
    _claim(out, overwrite)
    t: dict[str, float] = {}
    # Matrices this small run faster on one thread: on a shared 2-core machine two threads were
    # measured 15x slower (each waits for a core the other process holds), and on a free one they
    # gain little.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _timed(t, "model"):
            say(f"quickstart [1/6] making a {budget.size} model and its tokenizer from the built-in corpus")
            corpus_txt = write_corpus(out / "data" / "corpus.txt", budget.corpus_docs, budget.seed)
            from ..models.tiny import init_model

            init_model(out / "base-init", size=budget.size, corpus=[corpus_txt], seed=budget.seed)
        with _timed(t, "pretrain"):
            say(f"quickstart [2/6] pre-training on {corpus_txt} for {budget.pretrain_steps} steps")
            pretrain = _train(pretrain_config(out, corpus_txt, budget))
            samples = pretrain_samples(out / "pretrain" / "model")
            write_report(out / "pretrain", {**pretrain, "sections": [samples_section(samples)]})
        with _timed(t, "task"):
            say("quickstart [3/6] writing the instruction task (past tense; the eval sentences are held out)")
            train_rows, eval_rows = past_tense_task(budget.task_train, budget.task_eval, seed=budget.seed)
            train_file = write_jsonl(out / "data" / "task_train.jsonl", train_rows)
            eval_file = write_jsonl(out / "data" / "task_eval.jsonl", eval_rows)
        with _timed(t, "sft"):
            say(f"quickstart [4/6] LoRA fine-tuning on {train_file} for {budget.sft_steps} steps")
            sft = _train(sft_config(out, train_file, eval_file, budget))
        with _timed(t, "evaluate"):
            say(f"quickstart [5/6] answering {len(eval_rows)} held-out prompts without and with the adapter")
            result = before_after(out / "pretrain" / "model", out / "sft" / "adapter", eval_rows, eval_file, budget)
            result["n_train"] = len(train_rows)
            write_report(out / "sft", {**sft, "sections": [result_section(result)]})
        with _timed(t, "dpo"):
            say(f"quickstart [6/6] DPO with LoRA on the SFT model, {budget.dpo_steps} steps on correct vs wrong answers")
            dpo = run_dpo_stage(out, budget, _train)
            write_report(out / "dpo", {**dpo.pop("summary"), "sections": [dpo_section(dpo)] + _dpo_metrics_sections(out)})
            result["dpo"] = dpo
    finally:
        torch.set_num_threads(threads)

    result.update(timings_s={k: round(v, 1) for k, v in t.items()}, budget=asdict(budget), budget_name=budget_name,
                  out=str(out), paths=_paths(out))
    write_readme(out, result)
    print(summary_text(result), flush=True)
    return result


def _dpo_metrics_sections(out: Path) -> list:
    from ..objectives.preference_report import report_sections

    return report_sections(out / "dpo", "dpo (sigmoid)")


def _claim(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` unless --overwrite, and even then remove only what a quickstart makes."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another --out")
    present = sorted(out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace the quickstart there, or choose another --out")
    foreign = [p.name for p in present if p.name not in OUR_ENTRIES]
    if foreign:
        raise UserError(f"--out {out} holds files the quickstart did not make ({', '.join(foreign)}); "
                        "--overwrite leaves those alone, so choose an empty or new --out")
    for p in present:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str):
    t0 = time.perf_counter()
    yield
    timings[phase] = time.perf_counter() - t0


def write_corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    """The built-in corpus as a .txt file, one document per paragraph (the text reader's unit)."""
    from ..models.corpus import builtin_corpus

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(builtin_corpus(n_docs, seed=seed)) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _train_section(b: Budget, steps: int, lr: float) -> dict:
    return {"lr": lr, "max_steps": steps, "micro_batch_size": b.micro_batch_size, "warmup_steps": steps // 10,
            "eval_every": max(1, steps // 4), "save_every": 0, "precision": "fp32", "seed": b.seed}


def pretrain_config(out: Path, corpus_txt: Path, b: Budget):
    from ..config import validate_config

    return validate_config({
        "model": {"path": str(out / "base-init")},
        "method": "pretrain",
        "adapter": {"type": "none"},
        "data": {"train": [str(corpus_txt)], "format": "text", "packing": True, "max_length": b.max_length,
                 "eval_fraction": 0.02},
        "train": _train_section(b, b.pretrain_steps, b.pretrain_lr),
        "output_dir": str(out / "pretrain"),
    }, source="quickstart pretrain config")


def sft_config(out: Path, train_file: Path, eval_file: Path, b: Budget):
    from ..config import validate_config

    return validate_config({
        "model": {"path": str(out / "pretrain" / "model")},
        "method": "sft",
        # alpha = 2r, the usual scale; no dropout: a few hundred steps leave nothing to regularise.
        "adapter": {"type": "lora", "r": b.lora_r, "alpha": 2 * b.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [str(train_file)], "eval": [str(eval_file)], "format": "alpaca", "packing": True,
                 "max_length": b.max_length},
        "train": _train_section(b, b.sft_steps, b.sft_lr),
        "output_dir": str(out / "sft"),
    }, source="quickstart sft config")


def _train(cfg) -> dict:
    from ..train.run import train

    return train(cfg, overwrite=True)


def pretrain_samples(model_dir: Path) -> list[tuple[str, str]]:
    from transformers import AutoModelForCausalLM

    from ..evaluate.generation import greedy_generate
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # Pre-training documents start with BOS, so these openings get one too.
    texts = greedy_generate(model, tokenizer, list(SAMPLE_OPENINGS), max_new_tokens=24, add_special_tokens=True)
    return list(zip(SAMPLE_OPENINGS, texts))


def before_after(base_dir: Path, adapter_dir: Path, eval_rows: list[dict], eval_file: Path, b: Budget) -> dict:
    """Exact match and answer-token loss on the held-out rows: the base first, then base + adapter
    (PEFT injects the LoRA layers into the base model in place, so the order matters)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ..config import DataConfig
    from ..evaluate.generation import greedy_answers
    from ..evaluate.loglik import answer_loss
    from ..evaluate.metrics import exact_match
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(base_dir))
    # The user turn as the alpaca format renders it (data/formats.py), so prompts match training.
    prompts = [f"{r['instruction']}\n\n{r['input']}" for r in eval_rows]
    targets = [r["output"] for r in eval_rows]
    data = DataConfig(train=[str(eval_file)], format="alpaca", max_length=b.max_length, packing=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    before, before_loss = greedy_answers(model, tokenizer, prompts), answer_loss(model, tokenizer, data)
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    after, after_loss = greedy_answers(model, tokenizer, prompts), answer_loss(model, tokenizer, data)
    return {
        "task": INSTRUCTION, "n_eval": len(eval_rows),
        "before": {"accuracy": exact_match(before, targets), "eval_loss": before_loss},
        "after": {"accuracy": exact_match(after, targets), "eval_loss": after_loss},
        "examples": [{"prompt": r["input"], "expected": t, "before": x, "after": y}
                     for r, t, x, y in zip(eval_rows, targets, before, after)],
    }


def _paths(out: Path) -> dict[str, str]:
    return {
        "report": str(out / "sft" / "report.md"), "loss_png": str(out / "sft" / "loss.png"),
        "adapter": str(out / "sft" / "adapter"), "pretrain_report": str(out / "pretrain" / "report.md"),
        "pretrain_loss_png": str(out / "pretrain" / "loss.png"), "pretrained_model": str(out / "pretrain" / "model"),
        "readme": str(out / "README.md"), "dpo_report": str(out / "dpo" / "report.md"),
    }
