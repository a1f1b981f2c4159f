"""The online-RL part of a run: samples.jsonl during training, and report.md's section with the
reward / KL / completion-length curves (`rl.png`), a table by step and sample completions."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...train.metrics import atomic_write_bytes, read_metrics
from ..report_common import fmt_cell, write_png

KEYS = ("reward", "reward_std", "kl", "kl_sequence", "entropy", "completion_length", "truncated_fraction", "zero_std_fraction",
        "clip_fraction", "value_loss", "approx_kl", "beta")
_SAMPLES_PER_STEP = 16


def write_samples(path: Path, step: int, prompts, texts: list[str], samples) -> None:
    """Append this step's first completions; lines of a later step (a resumed run) are dropped first."""
    kept = []
    if path.is_file():
        kept = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] < step]
    for p, t, s in list(zip(prompts, texts, samples))[:_SAMPLES_PER_STEP]:
        kept.append(json.dumps({"step": step, "prompt": p.text, "completion": t, "reward": s.reward, "rewards": s.rewards,
                                "advantage": s.advantage, "truncated": s.truncated}, ensure_ascii=False))
    atomic_write_bytes(path, ("\n".join(kept) + "\n").encode("utf-8"))


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_rl(records: list[dict], out_png: Path, title: str) -> Path | None:
    from matplotlib.figure import Figure

    panels = [k for k in ("reward", "kl", "completion_length") if any(k in r for r in records)]
    if "reward" not in panels:
        return None
    fig = Figure(figsize=(8, 2.6 * len(panels)), dpi=100)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, panels):
        steps, vals = _series(records, key)
        ax.plot(steps, vals, linewidth=1.5)
        ax.set_ylabel(key)
    axes[0].set_title(title)
    axes[-1].set_xlabel("step")
    return write_png(fig, out_png)


def rl_report_sections(run_dir: Path, method: str) -> list[tuple[str, str]]:
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward" in r]
    if not records:
        return []
    png = plot_rl(records, run_dir / "rl.png", f"{run_dir.name}: {method}")
    keys = [k for k in KEYS if any(k in r for r in records)] + sorted({k for r in records for k in r if k.startswith("rewards/")})
    pick = sorted({records[0]["step"], records[-1]["step"], *[r["step"] for r in records][:: max(1, len(records) // 8)]})
    by_step = {r["step"]: r for r in records}
    rows = ["| step | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    rows += [f"| {s} | " + " | ".join(fmt_cell(by_step[s].get(k)) for k in keys) + " |" for s in pick]
    body = ("The logged loss of GRPO/RLOO is near 0 by construction (advantages are centred within each group and "
            "the ratio is 1 at the first iteration); watch the reward, KL and completion length instead.\n\n")
    if png is not None:
        body += "![rl curves](rl.png)\n\n"
    body += "\n".join(rows)
    samples = run_dir / "samples.jsonl"
    if samples.is_file():
        lines = [json.loads(ln) for ln in samples.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if lines:
            last = max(x["step"] for x in lines)
            shown = [x for x in lines if x["step"] == last][:4]
            body += f"\n\nSample completions at step {last} (all in samples.jsonl):\n\n"
            body += "\n".join(f"- reward {x['reward']:.3f}: prompt `{x['prompt'][:120]}` -> `{x['completion'][:200]}`"
                              for x in shown)
    return [(f"Online RL ({method})", body)]
