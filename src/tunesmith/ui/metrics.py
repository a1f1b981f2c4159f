"""Reading a run's metrics.jsonl for the dashboard: unlike train/metrics.read_metrics (which stops a
resume on a corrupt line), a bad line here is skipped and named, so one damaged run never takes
the table or its page down.

Lines are what train/metrics.MetricsLog writes: one JSON object with a "step" per line; NaN and
infinities were written as the strings "nan", "inf", "-inf" and are read back as floats.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
# Keys that count or time the run rather than measure the model: not drawn as curves.
NOT_CURVES = {"step", "epoch", "tokens", "elapsed_s", "eval_tokens"}


@dataclass
class Metrics:
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "metrics.jsonl:7: not JSON (...)"
    torn_tail: bool = False  # the last line has no newline yet: a write in progress, or a killed run


def _value(v):
    return NON_FINITE.get(v, v) if isinstance(v, str) else v


def parse_metrics(text: str, label: str = "metrics.jsonl") -> Metrics:
    out = Metrics()
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    if tail.strip():
        out.torn_tail = True
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            out.problems.append(f"{label}:{i}: not JSON ({e.msg}); line skipped: {line[:60]!r}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            out.problems.append(f"{label}:{i}: not an object with an integer 'step'; line skipped: {line[:60]!r}")
            continue
        out.records.append({k: _value(v) for k, v in record.items()})
    return out


_cache: dict[Path, tuple[tuple[int, int], Metrics]] = {}
CACHE_RUNS = 256


def read_run_metrics(path: Path) -> Metrics:
    """Parsed metrics.jsonl, re-read only when its size or mtime changed: the table polls every run
    every few seconds, and a long run's log has tens of thousands of lines."""
    try:
        st = path.stat()
    except OSError:
        return Metrics()
    key = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        return Metrics(problems=[f"{path.name}: unreadable ({e.strerror})"])
    parsed = parse_metrics(text, path.name)
    if len(_cache) >= CACHE_RUNS:
        _cache.pop(next(iter(_cache)))
    _cache[path] = (key, parsed)
    return parsed


def curve_keys(records: list[dict]) -> list[str]:
    """Every numeric key some record has, in first-seen order, minus the counters."""
    seen: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool):
                seen.setdefault(k, None)
    return list(seen)


def summarise(records: list[dict]) -> dict:
    """The table's numbers: steps, last loss, best eval loss (and its step), tokens/s, wall time."""
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    evals = [(r["eval_loss"], r["step"]) for r in records if finite(r.get("eval_loss"))]
    speeds = [r["tokens_per_s"] for r in records if finite(r.get("tokens_per_s"))]
    recent = speeds[-20:]  # the first steps carry warm-up; the recent ones are what the run does now
    elapsed = [r["elapsed_s"] for r in records if finite(r.get("elapsed_s"))]
    losses = [r for r in records if "loss" in r]
    best = min(evals) if evals else None
    return {
        "steps": max((r["step"] for r in records), default=0),
        "last_loss": losses[-1]["loss"] if losses else None,
        "best_eval_loss": best[0] if best else None,
        "best_eval_step": best[1] if best else None,
        "tokens_per_s": sorted(recent)[len(recent) // 2] if recent else None,
        "wall_s": max(elapsed) if elapsed else None,
    }


def json_safe(records: list[dict]) -> list[dict]:
    """NaN/inf back to strings for JSON (the browser's JSON.parse rejects bare NaN)."""
    return [{k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in records]
