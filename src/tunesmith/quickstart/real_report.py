"""The real-model quickstart's words: `report.md`, `summary.json` and the summary printed at the end.
Formatting only; every number comes in through the summary dict that `run_real_quickstart` builds."""

from __future__ import annotations

import json
from pathlib import Path

from ..train.metrics import atomic_write_bytes
from .report import _cell

MODELS = (("base", "base"), ("tuned", "base + LoRA"), ("merged", "merged (SFT + DPO)"), ("gguf", "GGUF in llama.cpp"))
METRICS = (("exact_match", "exact match"), ("fields_correct", "name, age and city right"))
N_EXAMPLES = 6


def _pct(x: float, n: int) -> str:
    return f"{100 * x:.1f}% ({round(x * n)}/{n})"


def _gguf_label(s: dict) -> str:
    e = s["export"]
    return f"GGUF {s['budget']['quant']} in llama.cpp" + ("" if e["verified"] else " (unverified)")


def table(s: dict) -> str:
    n = s["n_eval"]
    labels = [lab if k != "gguf" else _gguf_label(s) for k, lab in MODELS]
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(MODELS)]
    for key, name in METRICS:
        lines.append(f"| {name} | " + " | ".join(_pct(s[k][key], n) for k, _ in MODELS) + " |")
    return "\n".join(lines)


def _examples(examples: list[dict]) -> str:
    lines = ["| sentence | expected | " + " | ".join(lab for _, lab in MODELS) + " |", "|---|---|" + "---|" * len(MODELS)]
    for ex in examples[:N_EXAMPLES]:
        cells = [_cell(ex[k], 40) + (" ✓" if ex[k].strip() == ex["expected"] else "") for k, _ in MODELS]
        lines.append(f"| {_cell(ex['input'], 40)} | {_cell(ex['expected'], 40)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _export_text(s: dict) -> str:
    e = s["export"]
    size = f"{e['size_bytes'] / 2**20:.1f} MiB"
    if e["verified"]:
        inc = e.get("ppl_increase")
        ppl = f", perplexity +{100 * inc:.2f}% against the merged model" if inc is not None else ""
        return f"`{Path(e['path']).name}` ({size}) passed `tunesmith export`'s verification in llama.cpp{ppl}."
    return (f"`{Path(e['path']).name}` ({size}) was **refused by `tunesmith export`'s verification** and exported "
            f"again with `--no-verify` so the table can show its answers: {e['refused']}")


def report_text(s: dict, examples: list[dict]) -> str:
    d, t, b = s["dpo"], s["timings_s"], s["budget"]
    loss = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    return "\n".join([
        "# tunesmith quickstart: SmolLM2-135M-Instruct", "",
        f"Task: *{s['task']}* followed by a sentence such as `{examples[0]['input']}`. "
        f"LoRA (r {b['lora_r']}, all linear layers) trained on {s['n_train']} rows for {b['sft_steps']} steps; "
        f"scored on {s['n_eval']} held-out sentences whose names and cities no training row contains. "
        "*Exact match*: the greedy answer is exactly the expected line of JSON. *Name, age and city right*: "
        "the answer, with any code fence or sentence around it removed, parses as JSON with the right values "
        "(the age a number).", "",
        table(s), "",
        f"SFT training loss {loss(s['sft']['first_loss'])} -> {loss(s['sft']['final_loss'])}.", "",
        "## DPO", "",
        f"DPO (sigmoid, beta 0.1, a new LoRA on `sft-merged/`) for {d['steps']} steps on {d['n_train']} pairs: the "
        "one-line JSON against a typical mistake (code fence, quoted age, dropped surname, a sentence in front). "
        f"Loss {loss(d['first_loss'])} -> {loss(d['final_loss'])} (ln 2 = 0.693 at step 0). On {d['n_eval']} "
        "held-out pairs:", "",
        "| | before (SFT) | after (SFT + DPO) |", "|---|---:|---:|",
        f"| preference accuracy | {100 * d['before']['accuracy']:.1f}% | {100 * d['after']['accuracy']:.1f}% |",
        f"| mean log-prob margin | {d['before']['mean_margin']:.2f} | {d['after']['mean_margin']:.2f} |", "",
        "## Export", "", _export_text(s), "",
        f"## The first {N_EXAMPLES} held-out prompts", "", _examples(examples), "",
        "## Time", "",
        f"{sum(t.values()):.0f} s in all: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + ".", "",
        "## What ran, and where it went", "",
        "`base/` the converted model · `data/` task and preference rows · `sft/` the LoRA run (report.md, "
        "loss.png, adapter/) · `sft-merged/` base + SFT adapter · `dpo/` the DPO run · `merged/` the final "
        f"model · `gguf/` the {b['quant']} file, its Ollama Modelfile and export report · `summary.json` every "
        "number above.", "",
    ])


def write_report(out: Path, summary: dict, examples: list[dict]) -> None:
    atomic_write_bytes(out / "summary.json", (json.dumps({**summary, "examples": examples}, indent=1) + "\n").encode("utf-8"))
    atomic_write_bytes(out / "report.md", report_text(summary, examples).encode("utf-8"))


def summary_text(s: dict) -> str:
    n, d = s["n_eval"], s["dpo"]
    rows = [f"  {lab:<32} exact {100 * s[k]['exact_match']:5.1f}%   fields {100 * s[k]['fields_correct']:5.1f}%"
            for k, lab in MODELS]
    return "\n".join([
        f"quickstart done in {sum(s['timings_s'].values()):.0f} s: {s['task']} ({n} held-out prompts)", *rows,
        f"  DPO: held-out preference accuracy {100 * d['before']['accuracy']:.0f}% -> {100 * d['after']['accuracy']:.0f}%, "
        f"margin {d['before']['mean_margin']:.2f} -> {d['after']['mean_margin']:.2f}",
        f"  report: {Path(s['out']) / 'report.md'}",
    ])
