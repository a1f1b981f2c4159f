"""The preference part of a run's report.md: reward curves (`preference.png`) and a table of the
preference metrics by step, read from metrics.jsonl like the rest of the report."""

from __future__ import annotations

import math
from pathlib import Path

from ..train.metrics import read_metrics
from .report_common import fmt_cell, write_png

KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy", "logps/chosen", "logps/rejected", "kl")


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_preference(records: list[dict], out_png: Path, title: str) -> Path | None:
    from matplotlib.figure import Figure

    if not any("rewards/chosen" in r for r in records):
        return None
    fig = Figure(figsize=(8, 6), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for key, color in (("rewards/chosen", "tab:green"), ("rewards/rejected", "tab:red"), ("rewards/margin", "tab:blue")):
        steps, vals = _series(records, key)
        if steps:
            top.plot(steps, vals, color=color, linewidth=1.5, label=key)
        steps, vals = _series(records, f"eval_{key}")
        if steps:
            top.plot(steps, vals, color=color, linestyle="--", marker="o", linewidth=1, label=f"eval {key}")
    top.set_ylabel("reward")
    top.legend(fontsize=8)
    top.set_title(title)
    for key, style in (("rewards/accuracy", "-"), ("eval_rewards/accuracy", "--")):
        steps, vals = _series(records, key)
        if steps:
            bottom.plot(steps, vals, color="tab:purple", linestyle=style, marker="o" if "eval" in key else None, label=key)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("step")
    if bottom.lines:
        bottom.legend(fontsize=8)
    return write_png(fig, out_png)


def report_sections(run_dir: Path, method: str) -> list[tuple[str, str]]:
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    png = plot_preference(records, Path(run_dir) / "preference.png", f"{Path(run_dir).name}: {method}")
    keys = [k for k in KEYS if any(k in r for r in records)]
    train = [r for r in records if "loss" in r]
    if not train or not keys:
        return []
    pick = sorted({train[0]["step"], train[-1]["step"], *[r["step"] for r in train][:: max(1, len(train) // 8)]})
    rows = ["| step | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    by_step = {r["step"]: r for r in train}
    rows += [f"| {s} | " + " | ".join(fmt_cell(by_step[s].get(k)) for k in keys) + " |" for s in pick]
    body = ("Rewards are the implicit rewards of the method (β · log-ratio to the reference for DPO/IPO/hinge/KTO, "
            "β · log-prob for SimPO/CPO/ORPO, the scalar head for a reward model); accuracy is the share of pairs "
            "whose chosen reward is higher.\n\n")
    if png is not None:
        body += "![preference](preference.png)\n\n"
    body += "\n".join(rows)
    evals = [r for r in records if "eval_rewards/accuracy" in r]
    if evals:
        body += "\n\nHeld-out pairs: " + ", ".join(f"step {r['step']}: accuracy {r['eval_rewards/accuracy']:.3f}, "
                                                  f"margin {r.get('eval_rewards/margin', float('nan')):.4f}" for r in evals)
    return [("Preference metrics", body)]
