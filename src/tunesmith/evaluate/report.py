"""Write an eval directory: results.json (every score), samples/*.jsonl (every example), judge.jsonl
(every raw judge output), scores.png and report.md, the page a person reads.

report.md always has the same sections in the same order; a section with nothing to show says how
to turn it on, so a reader knows it was not run rather than lost.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..train.metrics import atomic_write_bytes

SECTIONS = ("Summary", "Perplexity", "Tasks", "Before / after", "LLM-as-judge", "lm-evaluation-harness",
            "Training signals", "Files")


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.4g}"
    return str(x)


def _cell(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else "…" + text[-width:]
    return text.replace("|", "\\|")


def _strip_records(results: dict) -> dict:
    out = json.loads(json.dumps(results, default=str))
    for side in out["results"].values():
        for r in side.values():
            r.pop("records", None)
    for k, v in (out.get("judge") or {}).items():
        if isinstance(v, dict):
            v.pop("records", None)
    return out


def write_outputs(out: Path, results: dict) -> None:
    atomic_write_bytes(out / "results.json", json.dumps(_strip_records(results), indent=2, default=str).encode())
    for side, tasks in results["results"].items():
        for name, r in tasks.items():
            if r.get("records"):
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                body = "".join(json.dumps(x, default=str) + "\n" for x in r["records"])
                atomic_write_bytes(out / "samples" / f"{side}-{safe}.jsonl", body.encode())
    judge = results.get("judge") or {}
    lines = [json.dumps({"side": k, **rec}) + "\n" for k, v in judge.items() if isinstance(v, dict) for rec in v.get("records", [])]
    if lines:
        atomic_write_bytes(out / "judge.jsonl", "".join(lines).encode())
    plot = _plot(results, out / "scores.png")
    atomic_write_bytes(out / "report.md", render(results, plot is not None).encode())


def _main_metric(r: dict) -> tuple[str, float] | None:
    scores = r.get("scores", {})
    for k in ("perplexity", "exact_match", "pass@1", "acc", "rouge_l", "schema_match", "json_valid"):
        if k in scores:
            return k, scores[k]
    return next(iter(scores.items()), None)


def _plot(results: dict, path: Path) -> Path | None:
    """One bar per task (its main score in [0, 1]); model and base side by side."""
    sides = results["results"]
    names = [n for n, r in sides["model"].items() if (m := _main_metric(r)) and m[0] != "perplexity"]
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.5))
    width = 0.8 / len(sides)
    for i, (side, tasks) in enumerate(sides.items()):
        vals = [(_main_metric(tasks[n]) or ("", 0))[1] if n in tasks else 0 for n in names]
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=side)
    ax.set_xticks([j + width * (len(sides) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels([f"{n}\n({_main_metric(sides['model'][n])[0]})" for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _who(t: dict | None) -> str:
    if not t:
        return "-"
    return f"`{t['path']}`" + (f" + adapter `{t['adapter']}`" if t.get("adapter") else "")


def _summary(results: dict) -> list[str]:
    lines = [f"- model: {_who(results['model'])}", f"- base: {_who(results.get('base'))}"]
    comp = results.get("comparison") or []
    regress = [c for c in comp if c["regression"]]
    if results.get("base"):
        better = sum(c["better"] for c in comp)
        lines.append(f"- against the base: {better} of {len(comp)} metrics better, "
                     + (f"**{len(regress)} regressions** past the threshold: " + ", ".join(f"{c['task']} {c['metric']}" for c in regress)
                        if regress else "no regression past the threshold"))
    lines += ["", "| task | metric | model | base |", "|---|---|---|---|"]
    for name, r in results["results"]["model"].items():
        m = _main_metric(r)
        if m:
            b = (results["results"].get("base") or {}).get(name, {}).get("scores", {}).get(m[0])
            lines.append(f"| {name} | {m[0]} | {_f(m[1])} | {_f(b)} |")
    return lines


def _perplexity(results: dict) -> list[str]:
    rows = [(side, n, r) for side, t in results["results"].items() for n, r in t.items() if r["metric"] == "perplexity"]
    if not rows:
        return ["Not run: pass `--perplexity FILE` (any supported data format; chat data is scored on assistant tokens)."]
    lines = ["Mean cross-entropy per label token (assistant tokens only for chat data) and its exp.", "",
             "| side | data | tokens | loss | perplexity |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {n} | {r['n']} | {_f(r['scores']['loss'])} | {_f(r['scores']['perplexity'], 3)} |" for s, n, r in rows]
    return lines


def _tasks(results: dict) -> list[str]:
    model = {n: r for n, r in results["results"]["model"].items() if r["metric"] != "perplexity"}
    if not model:
        return ["Not run: pass `--tasks NAME=FILE[,NAME=FILE]` (gsm8k, humaneval, mmlu, arc, hellaswag, mc, or a task YAML)."]
    lines = []
    for name, r in model.items():
        lines += [f"### {name}", f"{r['n']} examples from `{r['source']}`; "
                  + ", ".join(f"{k} = {_f(v)}" for k, v in r["scores"].items()), ""]
        for rec in r["records"][:3]:
            got = rec.get("answer", rec.get("pick"))
            want = rec.get("target", rec.get("gold"))
            score = {k: rec[k] for k in ("exact_match", "extracted", "acc", "rouge_l", "json_valid", "schema_match", "status") if k in rec}
            lines.append(f"- prompt: `{_cell(rec['prompt'], 120)}`  \n  answer: `{_cell(got, 160)}`  \n  "
                         f"expected: `{_cell(want, 80)}`  \n  score: {score}")
        lines.append("")
    return lines


def _before_after(results: dict) -> list[str]:
    comp = results.get("comparison")
    if not results.get("base"):
        return ["Not run: pass `--base PATH` (with a run config, `--base` alone uses its `model.path`) to score the base "
                "on the same tasks, report deltas and flag regressions (including a general-text perplexity set for "
                "catastrophic forgetting)."]
    thr = results["config"]["regression_threshold"]
    lines = [f"Regression threshold: {thr} (absolute for scores in [0, 1], relative for loss and perplexity). "
             "`general:` rows are text the fine-tune was not trained on: a rise there is forgetting.", "",
             "| task | metric | base | model | delta | |", "|---|---|---|---|---|---|"]
    for c in comp or []:
        flag = "**REGRESSION**" if c["regression"] else ("better" if c["better"] else "")
        lines.append(f"| {c['task']} | {c['metric']} | {_f(c['base'])} | {_f(c['model'])} | {c['delta']:+.4f} | {flag} |")
    return lines


def _judge(results: dict) -> list[str]:
    j = results.get("judge")
    if not j:
        return ["Not run: set `--judge single|pairwise --judge-questions FILE` and `--judge-endpoint URL` "
                "(OpenAI-compatible) or `--judge-local DIR`."]
    lines = [f"Judge: {j['judge']}, mode {j['mode']}; raw judge outputs in `judge.jsonl`.", ""]
    for side, v in j.items():
        if isinstance(v, dict) and "scores" in v:
            lines.append(f"- {side}: " + ", ".join(f"{k} = {_f(x, 3)}" for k, x in v["scores"].items()) + f" over {v['n']} questions")
    if j["mode"] == "pairwise":
        lines.append("- each pair was judged twice with the answers' positions swapped; a win or loss counts only when both orders agree")
    return lines


def _harness(results: dict) -> list[str]:
    h = results.get("harness")
    if not h:
        return ["Not run: `--harness TASKS` (needs `pip install tunesmith[harness]`)."]
    lines = ["| side | task | metric | value |", "|---|---|---|---|"]
    for side, v in h.items():
        for task, scores in v["scores"].items():
            lines += [f"| {side} | {task} | {k} | {_f(x)} |" for k, x in scores.items()]
    return lines + ["", f"lm-evaluation-harness {next(iter(h.values()))['version']}."]


def _training(results: dict) -> list[str]:
    t = results.get("training")
    if not t:
        return ["Not run: evaluate with the run's config (`tunesmith eval run.yaml`) to read its metrics.jsonl."]
    if "best_eval_step" not in t:
        return [f"{t.get('note', 'no eval loss logged')}."]
    lines = [f"- best eval loss {_f(t['best_eval_loss'])} at step {t['best_eval_step']}; last {_f(t['last_eval_loss'])} at step {t['last_eval_step']}",
             f"- train loss near the best step {_f(t['train_loss_at_best'])}, near the last {_f(t['train_loss_at_last'])}; eval - train gap at the end {_f(t['gap_at_last'])}",
             "- **overfitting**: eval loss rose while train loss kept falling; prefer the best checkpoint or stop earlier"
             if t["overfitting"] else "- no sign of overfitting (eval loss did not rise past its best while train loss fell)"]
    if t.get("best_checkpoint"):
        b = t["best_checkpoint"]
        lines.append(f"- best checkpoint on disk: `{b['path']}` (step {b['step']}, eval loss {_f(b['eval_loss'])})")
    return lines


def render(results: dict, has_plot: bool) -> str:
    parts = {"Summary": _summary(results) + (["", "![scores](scores.png)"] if has_plot else []),
             "Perplexity": _perplexity(results), "Tasks": _tasks(results), "Before / after": _before_after(results),
             "LLM-as-judge": _judge(results), "lm-evaluation-harness": _harness(results),
             "Training signals": _training(results),
             "Files": ["- `results.json`: every score and the settings", "- `samples/<side>-<task>.jsonl`: every example with its prompt, answer and score",
                       "- `judge.jsonl`: the judge's raw outputs (when a judge ran)", "- `scores.png`: main score per task",
                       "- `general_text.jsonl`: the general set scored for forgetting (when the built-in one was used)"]}
    out = ["# Evaluation report", ""]
    for name in SECTIONS:
        out += [f"## {name}", ""] + parts[name] + [""]
    return "\n".join(out)
