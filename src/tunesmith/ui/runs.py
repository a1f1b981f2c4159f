"""Finding run directories under --runs and describing each from its own files: what
`tunesmith train` writes (config.yaml, the resolved config; metrics.jsonl; checkpoints/step-N;
adapter/ or model/; report.md, written last; the `.tunesmith.json` marker, io.py).

Status, first rule that applies:
- a run this dashboard launched (ui/jobs.py): running while its process lives; afterwards its exit
  code says finished (0), interrupted (stopped from the page) or failed (anything else);
- report.md and adapter/ or model/ present -> finished (report.md is the last thing train writes);
- the last logged loss is not finite -> failed (train stops with an error on a non-finite loss);
- something written in the last ACTIVE_S seconds -> running;
- otherwise interrupted: it stopped before the end (killed, crashed, or the machine went down);
  `tunesmith train CONFIG --resume` continues it from its newest checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..io import output_stage
from .metrics import read_run_metrics, summarise

ACTIVE_S = 120  # a live run logs at least every few steps; two minutes of silence is not a live run
SCAN_DEPTH = 2  # runs/NAME and runs/GROUP/NAME (the quickstart writes runs/quickstart/sft, .../dpo)
UI_DIR = ".tunesmith-ui"  # the dashboard's own records under --runs (launched configs, logs)


@dataclass
class RunInfo:
    name: str  # path under --runs, "/"-separated
    status: str  # running | finished | failed | interrupted
    status_reason: str
    method: str | None = None
    model: str | None = None
    adapter: str | None = None
    output_dir: str | None = None
    steps: int = 0
    max_steps: int | None = None
    last_loss: float | None = None
    best_eval_loss: float | None = None
    best_eval_step: int | None = None
    tokens_per_s: float | None = None
    wall_s: float | None = None
    checkpoints: list[str] = field(default_factory=list)
    has_report: bool = False
    updated: float | None = None  # newest mtime among the run's files (epoch seconds)
    problems: list[str] = field(default_factory=list)
    job: dict | None = None  # the launch record, for runs started from the dashboard

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("last_loss", "best_eval_loss"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and output_stage(path) == "train"


def find_runs(runs_dir: Path) -> list[Path]:
    """Run directories under runs_dir, up to SCAN_DEPTH deep, hidden ones skipped, sorted by name."""
    found, frontier = [], [runs_dir]
    for _ in range(SCAN_DEPTH):
        nxt = []
        for parent in frontier:
            try:
                children = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                (found if is_run_dir(child) else nxt).append(child)
        frontier = nxt
    return found


def read_config(run: Path) -> tuple[dict, list[str]]:
    """(config.yaml as a dict, problems)."""
    path = run / "config.yaml"
    if not path.is_file():
        return {}, ["config.yaml is missing (the run stopped before its config and data checked out)"]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as e:
        return {}, [f"config.yaml: not valid YAML ({getattr(e, 'problem', e)})"]
    if not isinstance(raw, dict):
        return {}, ["config.yaml: not a mapping of sections"]
    return raw, []


def checkpoints(run: Path) -> list[str]:
    """Complete checkpoints (step-N, by step); a .tmp-step-N is one being written or a killed save."""
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    steps = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(steps, key=lambda n: int(n[5:]))


def _newest_mtime(run: Path) -> float | None:
    times = []
    for p in (run, run / "metrics.jsonl", run / "config.yaml", run / "checkpoints", run / "report.md"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def _status(run: Path, last_loss, updated: float | None, job: dict | None, now: float) -> tuple[str, str]:
    if job is not None:
        from .jobs import job_status

        found = job_status(job)
        if found is not None:
            return found
    result = next((n for n in ("adapter", "model") if (run / n).exists()), None)
    if (run / "report.md").is_file() and result:
        return "finished", f"report.md and {result}/ written"
    if isinstance(last_loss, float) and not math.isfinite(last_loss):
        return "failed", f"the loss became {last_loss}; train stops on a non-finite loss"
    if updated is not None and now - updated < ACTIVE_S:
        return "running", f"last write {now - updated:.0f}s ago"
    ago = "" if updated is None else f" (last write {_ago(now - updated)} ago)"
    return "interrupted", f"stopped before the end{ago}; `tunesmith train CONFIG --resume` continues from the newest checkpoint"


def _ago(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def describe(run: Path, runs_dir: Path, job: dict | None = None, now: float | None = None) -> RunInfo:
    """Everything the table shows about one run; never raises for a damaged run (problems instead)."""
    now = time.time() if now is None else now
    cfg, problems = read_config(run)
    metrics = read_run_metrics(run / "metrics.jsonl")
    problems += metrics.problems
    if not (run / "metrics.jsonl").is_file() and cfg:
        problems.append("metrics.jsonl is missing (no step was logged)")
    nums = summarise(metrics.records)
    updated = _newest_mtime(run)
    status, reason = _status(run, nums["last_loss"], updated, job, now)
    section = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}  # noqa: E731
    train = section("train")
    return RunInfo(
        name=run.relative_to(runs_dir).as_posix(), status=status, status_reason=reason,
        method=cfg.get("method"), model=section("model").get("path"), adapter=section("adapter").get("type"),
        output_dir=cfg.get("output_dir"), max_steps=train.get("max_steps") or None,
        checkpoints=checkpoints(run), has_report=(run / "report.md").is_file(), updated=updated,
        problems=problems, job=job, **nums)


def resolve_run(runs_dir: Path, name: str) -> Path | None:
    """The run directory `name` names under runs_dir, or None: never a path outside runs_dir."""
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    path = (runs_dir / name).resolve()
    if not path.is_relative_to(runs_dir) or not is_run_dir(path):
        return None
    return path
