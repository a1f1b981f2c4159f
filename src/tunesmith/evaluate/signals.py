"""Training-time signals from a run directory: train vs eval loss divergence and the best checkpoint.

Overfitting shows as the eval loss turning up while the train loss keeps falling. We call it when
the last eval loss is above the best one by more than `tolerance` (relative) and the train loss
(mean of the log records since the best eval) is below the train loss at the best eval step.
The best checkpoint is the `checkpoints/step-N` with the lowest eval loss among those still on disk.
"""

from __future__ import annotations

from pathlib import Path

from ..train.metrics import read_metrics


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _train_loss_near(records: list[dict], step: int, window: int = 10) -> float | None:
    vals = [v for r in records if r.get("step", 0) <= step and (v := _num(r.get("loss"))) is not None][-window:]
    return sum(vals) / len(vals) if vals else None


def training_signals(run_dir: str | Path, tolerance: float = 0.02) -> dict | None:
    """None when the directory has no metrics.jsonl."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = read_metrics(path)
    evals = [(r["step"], v) for r in records if (v := _num(r.get("eval_loss"))) is not None and "step" in r]
    out: dict = {"run_dir": str(run_dir), "evals": len(evals), "steps": max((r.get("step", 0) for r in records), default=0)}
    if not evals:
        out["note"] = "no eval_loss in metrics.jsonl (set data.eval or data.eval_fraction and train.eval_every)"
        return out
    best_step, best = min(evals, key=lambda e: e[1])
    last_step, last = evals[-1]
    train_best, train_last = _train_loss_near(records, best_step), _train_loss_near(records, last_step)
    out.update({"best_eval_loss": best, "best_eval_step": best_step, "last_eval_loss": last, "last_eval_step": last_step,
                "train_loss_at_best": train_best, "train_loss_at_last": train_last,
                "gap_at_last": None if train_last is None else last - train_last})
    rising = last > best * (1 + tolerance)
    train_falling = train_best is not None and train_last is not None and train_last < train_best
    out["overfitting"] = bool(rising and train_falling)
    ckpts = {int(p.name[5:]): p for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir() and p.name[5:].isdigit()}
    on_disk = [(s, v) for s, v in evals if s in ckpts]
    if on_disk:
        s, v = min(on_disk, key=lambda e: e[1])
        out["best_checkpoint"] = {"path": str(ckpts[s]), "step": s, "eval_loss": v}
    return out
