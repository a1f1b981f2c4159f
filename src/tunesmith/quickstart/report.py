"""The quickstart's words: the before/after section of sft/report.md, the samples section of
pretrain/report.md, out/README.md and the summary printed at the end. Formatting only; every number
comes in through the `result` dict that `run_quickstart` returns."""

from __future__ import annotations

from pathlib import Path

from ..train.metrics import atomic_write_bytes

N_EXAMPLES = 6


def _cell(text: str, width: int = 48) -> str:
    """Model output as one markdown table cell: newlines shown, pipes escaped, long text cut."""
    text = text.replace("\n", "⏎").replace("|", "\\|")
    text = text if len(text) <= width else text[: width - 1] + "…"
    return f"`{text}`" if text.strip() and "`" not in text else (text or "(empty)")


def _pct(x: float, n: int) -> str:
    return f"{100 * x:.1f}% ({round(x * n)}/{n})"


def result_section(result: dict) -> tuple[str, str]:
    """("Before and after fine-tuning", markdown): accuracy and loss table, then examples."""
    b, a, n = result["before"], result["after"], result["n_eval"]
    lines = [
        f"Task: *{result['task']}* followed by a sentence, e.g. `Emma buys a green cup.` → "
        f"`Emma bought a green cup.` The adapter was trained on {result['n_train']} sentences and is "
        f"scored here on {n} others that no training row contains, by exact match of the greedy answer "
        "(surrounding whitespace stripped). *Before* is the pre-trained model alone, *after* the same "
        "model with the LoRA adapter.",
        "",
        "| | before (pre-trained base) | after (base + LoRA) |",
        "|---|---:|---:|",
        f"| exact match | {_pct(b['accuracy'], n)} | {_pct(a['accuracy'], n)} |",
        f"| eval loss (answer tokens) | {b['eval_loss']:.4f} | {a['eval_loss']:.4f} |",
        "",
        f"The first {N_EXAMPLES} held-out prompts:",
        "",
        "| sentence | expected | before | after |",
        "|---|---|---|---|",
    ]
    for ex in result["examples"][:N_EXAMPLES]:
        mark = "✓" if ex["after"].strip() == ex["expected"].strip() else "✗"
        lines.append(f"| {_cell(ex['prompt'])} | {_cell(ex['expected'])} | {_cell(ex['before'])} | "
                     f"{_cell(ex['after'])} {mark} |")
    return "Before and after fine-tuning", "\n".join(lines)


def samples_section(samples: list[tuple[str, str]]) -> tuple[str, str]:
    """("Samples", markdown): greedy continuations of a few openings by the pre-trained model."""
    lines = ["Greedy continuations by the pre-trained model (`model/`):", "", "| opening | continuation |", "|---|---|"]
    lines += [f"| {_cell(prompt, 80)} | {_cell(text, 80)} |" for prompt, text in samples]
    return "Samples", "\n".join(lines)


def summary_text(result: dict) -> str:
    b, a, t, p = result["before"], result["after"], result["timings_s"], result["paths"]
    return "\n".join([
        f"quickstart done in {sum(t.values()):.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in t.items())})",
        f"  task: {result['task']} ({result['n_eval']} held-out sentences)",
        f"  exact match: {b['accuracy']:.0%} before -> {a['accuracy']:.0%} after LoRA "
        f"(eval loss {b['eval_loss']:.2f} -> {a['eval_loss']:.2f})",
        *([f"  DPO: held-out preference accuracy {result['dpo']['before']['accuracy']:.0%} -> "
           f"{result['dpo']['after']['accuracy']:.0%} (report {p['dpo_report']})"] if "dpo" in result else []),
        f"  report: {p['report']}",
        f"  loss curves: {p['loss_png']}, {p['pretrain_loss_png']}",
        f"  everything: {p['readme']}",
    ])


def _dpo_readme(result: dict) -> str:
    if "dpo" not in result:
        return ""
    d = result["dpo"]
    return (f"\nThen DPO on the SFT model (`sft-merged/`, {d['steps']} steps, {d['n_train']} correct-vs-wrong pairs, "
            f"{result['timings_s'].get('dpo', 0):.0f} s): on {d['n_eval']} held-out pairs the model prefers the correct "
            f"answer in {100 * d['before']['accuracy']:.1f}% before and {100 * d['after']['accuracy']:.1f}% after "
            f"(mean log-prob margin {d['before']['mean_margin']:.2f} -> {d['after']['mean_margin']:.2f}); "
            "see [`dpo/report.md`](dpo/report.md).\n")


def write_readme(out: Path, result: dict) -> Path:
    b, a, n, t, bud = result["before"], result["after"], result["n_eval"], result["timings_s"], result["budget"]
    text = f"""# tunesmith quickstart

Made by `tunesmith quickstart` (budget `{result['budget_name']}`) in {sum(t.values()):.0f} s on the CPU.
Every step is an ordinary tunesmith stage; each run directory holds the `config.yaml` that reruns it
with `tunesmith train <run>/config.yaml --overwrite`.

## Result

*{result['task']}* on {n} held-out sentences (none occurs in the training data):

| | before (pre-trained base) | after (base + LoRA) |
|---|---:|---:|
| exact match | {_pct(b['accuracy'], n)} | {_pct(a['accuracy'], n)} |
| eval loss (answer tokens) | {b['eval_loss']:.4f} | {a['eval_loss']:.4f} |

Examples and loss curves: [`sft/report.md`](sft/report.md).
{_dpo_readme(result)}
## What ran, and where it went

| step | time | output |
|---|---:|---|
| 1. a `{bud['size']}` Llama and its BPE tokenizer, trained on `data/corpus.txt` | {t['model']:.0f} s | [`base-init/`](base-init) |
| 2. pre-training on `data/corpus.txt` ({bud['corpus_docs']} documents), {bud['pretrain_steps']} steps, full fine-tuning | {t['pretrain']:.0f} s | [`pretrain/report.md`](pretrain/report.md), [`pretrain/loss.png`](pretrain/loss.png), `pretrain/model/` |
| 3. the task: {result['n_train']} training and {n} held-out rows (alpaca) | {t['task']:.0f} s | [`data/task_train.jsonl`](data/task_train.jsonl), [`data/task_eval.jsonl`](data/task_eval.jsonl) |
| 4. LoRA fine-tuning (r={bud['lora_r']}, all linear layers), {bud['sft_steps']} steps | {t['sft']:.0f} s | [`sft/report.md`](sft/report.md), [`sft/loss.png`](sft/loss.png), `sft/adapter/` |
| 5. greedy answers and eval loss, before and after | {t['evaluate']:.0f} s | the *Before and after* section of [`sft/report.md`](sft/report.md) |

## Use the result

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

tok = AutoTokenizer.from_pretrained("{out / 'pretrain' / 'model'}")
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{out / 'pretrain' / 'model'}"), "{out / 'sft' / 'adapter'}")
prompt = tok.apply_chat_template([{{"role": "user", "content": "{result['task']}\\n\\nMia sees a red kite."}}],
                                 tokenize=False, add_generation_prompt=True)
ids = model.generate(**tok(prompt, add_special_tokens=False, return_tensors="pt"), max_new_tokens=16, do_sample=False)
print(tok.decode(ids[0]))
```
"""
    path = out / "README.md"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
