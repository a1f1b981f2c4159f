"""Run directories for the dashboard's tests, written by the writers `tunesmith train` itself uses
(RunConfig.dump for config.yaml, MetricsLog for metrics.jsonl, io.write_marker, train/report.py for
report.md and loss.png), so they are in exactly the format a real run leaves."""

from __future__ import annotations

import math
from pathlib import Path

from tunesmith.config import RunConfig
from tunesmith.io import write_marker
from tunesmith.train.metrics import MetricsLog
from tunesmith.train.report import write_report


def curve(steps: int, start: float = 3.0, rate: float = 0.08, seed: int = 0) -> list[dict]:
    """Records like the loop's: falling loss, warm-up then decaying lr, an eval every 5 steps."""
    out = []
    for s in range(1, steps + 1):
        loss = start * math.exp(-rate * s) + 0.5 + 0.03 * math.sin(s * (1.3 + seed))
        r = {"step": s, "epoch": round(s / steps, 4), "loss": loss, "lr": 1e-3 * min(1.0, s / 3) * (1 - s / (steps + 1)),
             "grad_norm": 1.5 / s ** 0.5, "tokens": 512 * s, "tokens_per_s": 900.0 + 10 * s, "elapsed_s": 0.6 * s}
        if s % 5 == 0:
            r.update(eval_loss=loss + 0.1, eval_tokens=256)
        out.append(r)
    return out


def write_run(runs: Path, name: str, *, steps: int = 20, method: str = "sft", adapter: str = "lora", finished: bool = True,
              records: list[dict] | None = None, lr: float = 1e-3, extra_lines: list[str] = (), full_report: bool = True) -> Path:
    """`full_report=False`: report.md is a one-line page instead of train's (which draws loss.png with
    matplotlib: seconds per run on a busy machine); the status rules only look for the file."""
    run = runs / name
    run.mkdir(parents=True)
    write_marker(run, "train")
    cfg = RunConfig.model_validate({"model": {"path": "/models/tiny"}, "method": method, "adapter": {"type": adapter},
                                    "train": {"max_steps": steps, "lr": lr}, "output_dir": str(run)})
    (run / "config.yaml").write_text(cfg.dump(), encoding="utf-8")
    records = curve(steps) if records is None else records
    with MetricsLog(run / "metrics.jsonl") as log:
        for r in records:
            log.log(r)
    if extra_lines:
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.writelines(extra_lines)
    (run / "checkpoints" / f"step-{steps}").mkdir(parents=True)
    if finished:
        (run / ("adapter" if adapter != "none" else "model")).mkdir()
        if not full_report:
            (run / "report.md").write_text(f"# Run report: {name}\n", encoding="utf-8")
            return run
        write_report(run, {"name": name, "model": "/models/tiny", "method": method, "adapter": adapter, "steps": steps, "max_steps": steps,
                           "stop_reason": f"reached {steps} steps", "final_loss": records[-1]["loss"] if records else None})
    return run
