"""The page a person reads after a run: `report.md` with the story, the key numbers and `loss.png`.

Everything here reads `metrics.jsonl` and the trainer's `summary` dict; nothing here touches
the model, so a report can be rebuilt from a finished (or killed) run directory at any time.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from tunesmith.train.metrics import (
    atomic_write_bytes,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_loss,
    read_metrics,
)

_ADAPTER_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA", "ia3": "IA³"}

# What each standard output in a run directory is, in the order the Files section lists them.
_KNOWN_FILES = {
    "config.yaml": "the resolved config this run used",
    "metrics.jsonl": "one JSON line per logged step (train and eval)",
    "loss.png": "the loss curves shown above",
    "adapter": "the trained adapter (PEFT format)",
    "model": "the full fine-tuned model",
    "checkpoints": "resumable checkpoints",
    "tensorboard": "TensorBoard event files",
}


def _num(x: object) -> float | None:
    """A finite float, or None for missing/NaN/inf values (logged as strings)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], _num(r.get(key))) for r in records]
    pairs = [(s, v) for s, v in pairs if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _ema(values: list[float]) -> list[float]:
    """Bias-corrected EMA over about n/30 points (at most ~20): smooth, without lagging far."""
    beta = min(0.95, max(0.0, 1.0 - 30.0 / len(values)))
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def plot_curves(records: list[dict], out_png: Path, title: str = "Training loss") -> Path | None:
    """Loss curves to `out_png` (atomically); None when no record has a loss to plot."""
    steps, loss = _series(records, "loss")
    eval_steps, eval_loss = _series(records, "eval_loss")
    lr_steps, lr = _series(records, "lr")
    if not steps and not eval_steps:
        return None
    # The object API (not pyplot) draws with Agg and leaves global matplotlib state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 6.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    # lr gets its own small panel below: on a twin axis it tangles with the loss lines.
    if lr:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_lr = fig.subplots(), None
    lo, hi = min(loss + eval_loss), max(loss + eval_loss)
    log_y = lo > 0 and hi / lo > 10  # the loss spans more than a decade
    if len(steps) >= 10:
        # On a log axis, average log(loss): a linear EMA would sit visibly above a falling curve.
        smooth = [math.exp(v) for v in _ema([math.log(v) for v in loss])] if log_y else _ema(loss)
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=1, label="train loss (raw)")
        ax.plot(steps, smooth, color="tab:blue", linewidth=2, label="train loss (smoothed)")
    elif steps:
        ax.plot(steps, loss, color="tab:blue", linewidth=2, marker=".", label="train loss")
    if eval_steps:
        ax.plot(eval_steps, eval_loss, color="tab:orange", linestyle="--", linewidth=1,
                marker="o", markersize=6, label="eval loss")
        best = min(range(len(eval_loss)), key=eval_loss.__getitem__)
        # Below the best point (usually a valley); flush to the side at either end of the run.
        ha = {0: "left", len(eval_steps) - 1: "right"}.get(best, "center")
        ax.annotate(f"best {fmt_loss(eval_loss[best])} @ {eval_steps[best]}",
                    (eval_steps[best], eval_loss[best]), textcoords="offset points",
                    xytext=(0, -10), ha=ha, va="top",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
                    color="tab:orange", fontsize=9)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    if ax_lr is not None:
        ax_lr.plot(lr_steps, lr, color="tab:green", linewidth=1.5)
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.grid(True, alpha=0.3)
    (ax_lr or ax).set_xlabel("optimizer step")
    (ax_lr or ax).xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(out_png), buf.getvalue())
    return Path(out_png)


def _what_happened(s: dict, records: list[dict]) -> str:
    steps, loss = _series(records, "loss")
    eval_steps, eval_loss = _series(records, "eval_loss")
    how = [f"{s['quantization'].upper()} quantized"] if s.get("quantization") else []
    how += [s["precision"]] if s.get("precision") else []
    adapter = _ADAPTER_NAMES.get(s.get("adapter") or "", s.get("adapter"))
    method = s.get("method") or "fine-tuning"
    label = method.upper() if method.isalpha() and len(method) <= 5 else method.capitalize()
    parts = [
        f"{label} run on `{s.get('model', 'an unnamed model')}`"
        + (f" with a {adapter} adapter" if adapter else " (full fine-tuning)")
        + (f" ({', '.join(how)})" if how else "") + "."
    ]
    if not steps and not eval_steps:
        parts.append("No training steps were logged, so there is no loss to report.")
    else:
        n = s.get("steps", max(steps + eval_steps))
        of = f" of {s['max_steps']}" if s.get("max_steps") else ""
        dur = s.get("duration_s", _last(records, "elapsed_s"))
        parts.append(f"It ran {n}{of} steps" + (f" in {fmt_duration(dur)}." if dur else "."))
    if loss:
        best = min(range(len(loss)), key=loss.__getitem__)
        parts.append(f"Train loss went from {fmt_loss(loss[0])} to {fmt_loss(loss[-1])} "
                     f"(lowest {fmt_loss(loss[best])} at step {steps[best]}).")
    if eval_loss:
        best = min(range(len(eval_loss)), key=eval_loss.__getitem__)
        parts.append(f"The best eval loss was {fmt_loss(eval_loss[best])} at step "
                     f"{eval_steps[best]} (last: {fmt_loss(eval_loss[-1])}).")
    if s.get("stop_reason"):
        parts.append(f"It stopped because: {s['stop_reason']}.")
    return " ".join(parts)


def _last(records: list[dict], key: str) -> float | None:
    values = _series(records, key)[1]
    return values[-1] if values else None


def _key_numbers(s: dict, records: list[dict]) -> list[str]:
    rows = []
    trainable, total = s.get("trainable_params"), s.get("total_params")
    if trainable is not None:
        share = f" of {fmt_count(total)} ({100 * trainable / total:.3g}%)" if total else ""
        rows.append(("Trainable parameters", fmt_count(trainable) + share))
    if s.get("tokens") is not None:
        rows.append(("Tokens seen", fmt_count(s["tokens"])))
    rates = _series(records, "tokens_per_s")[1]
    if rates or (s.get("tokens") and s.get("duration_s")):
        rate = sum(rates) / len(rates) if rates else s["tokens"] / s["duration_s"]
        rows.append(("Mean throughput", f"{fmt_count(rate)} tokens/s"))
    if s.get("peak_memory_bytes"):
        rows.append(("Peak memory", fmt_bytes(s["peak_memory_bytes"])))
    if s.get("predicted_peak_bytes") and s.get("measured_peak_bytes"):
        rows.append(("Peak memory: estimate vs measured", f"{fmt_bytes(s['predicted_peak_bytes'])} vs "
                     f"{fmt_bytes(s['measured_peak_bytes'])} ({s['estimate_error']:+.1%}; `tunesmith estimate`)"))
    loop_s, steps = _last(records, "elapsed_s"), s.get("steps")
    if s.get("predicted_step_seconds") and loop_s and steps:  # the training loop's wall clock, setup excluded
        rows.append(("Time per step: estimate vs measured", f"{s['predicted_step_seconds']:.2f} s vs {loop_s / steps:.2f} s "
                     f"({s['predicted_step_seconds'] / (loop_s / steps) - 1:+.1%}; wall clock of the loop)"))
    dur = s.get("duration_s", _last(records, "elapsed_s"))
    if dur is not None:
        rows.append(("Time", fmt_duration(dur)))
    if not rows:
        return []
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _table_steps(steps: list[int], eval_steps: list[int], n_rows: int) -> list[int]:
    """`n_rows` evenly spaced steps, each snapped to an eval step when one is within half a gap."""
    steps = sorted(set(steps) | set(eval_steps))
    if len(steps) <= n_rows:
        return steps
    gap = (steps[-1] - steps[0]) / (n_rows - 1)
    chosen = set()
    for i in range(n_rows):
        target = steps[0] + i * gap
        near_evals = [s for s in eval_steps if abs(s - target) <= gap / 2]
        chosen.add(min(near_evals or steps, key=lambda s: abs(s - target)))
    return sorted(chosen)


def _loss_table(records: list[dict], n_rows: int = 10) -> list[str]:
    """Train/eval loss and lr at about `n_rows` evenly spaced steps, preferring eval steps."""
    by_step: dict[int, dict] = {}
    for r in records:
        by_step.setdefault(r["step"], {}).update(r)
    chosen = _table_steps(_series(records, "loss")[0], _series(records, "eval_loss")[0], n_rows)
    if not chosen:
        return []
    lines = ["| step | train loss | eval loss | lr |", "|---:|---:|---:|---:|"]
    for step in chosen:
        r = by_step[step]
        lr = _num(r.get("lr"))
        lr_text = "–" if lr is None else f"{lr:.2e}"
        lines.append(f"| {step} | {fmt_loss(_num(r.get('loss')))} | "
                     f"{fmt_loss(_num(r.get('eval_loss')))} | {lr_text} |")
    return lines


def _files(run_dir: Path, output: str | None) -> list[str]:
    lines = []
    for name, what in _KNOWN_FILES.items():
        p = run_dir / name
        if p.is_dir() and name == "checkpoints":
            n = sum(1 for c in p.iterdir() if c.is_dir())
            lines.append(f"- `{name}/`: {what} ({n} saved)")
        elif p.exists():
            lines.append(f"- `{name}{'/' if p.is_dir() else ''}`: {what}")
    for p in sorted(run_dir.iterdir()):
        if p.name not in _KNOWN_FILES and p.name != "report.md" and not p.name.startswith("."):
            lines.append(f"- `{p.name}{'/' if p.is_dir() else ''}`")
    if output and not Path(output).resolve().is_relative_to(run_dir.resolve()):
        lines.append(f"- `{output}`: the trained weights")
    return lines


def write_report(run_dir: Path, summary: dict) -> Path:
    """Write run_dir/loss.png and run_dir/report.md from metrics.jsonl and the trainer's summary."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    name = summary.get("name", run_dir.name)
    png = plot_curves(records, run_dir / "loss.png", title=f"{name}: loss")
    if png is None:
        (run_dir / "loss.png").unlink(missing_ok=True)  # a stale plot from an earlier attempt
    out = [f"# Run report: {name}", "", "## What happened", ""]
    out += [_what_happened(summary, records), ""]
    if numbers := _key_numbers(summary, records):
        out += ["## Key numbers", "", *numbers, ""]
    if png is not None:
        out += ["## Loss", "", "![loss](loss.png)", ""]
    if table := _loss_table(records):
        out += ["## Loss by step", "", *table, ""]
    if summary.get("notes"):
        out += ["## Notes", "", *[f"- {note}" for note in summary["notes"]], ""]
    for title, body in summary.get("sections", []):
        out += [f"## {title}", "", body.strip(), ""]
    out += ["## Files", "", *_files(run_dir, summary.get("output")), ""]
    path = run_dir / "report.md"
    atomic_write_bytes(path, "\n".join(out).encode("utf-8"))
    return path
