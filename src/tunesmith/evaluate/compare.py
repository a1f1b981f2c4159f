"""Before/after: the model's scores next to the base's, deltas, and regressions beyond a threshold.

Every metric has a direction: higher is better for accuracies, pass rates, ROUGE-L, ratings;
lower is better for loss and perplexity. A regression is a move in the bad direction larger than
`threshold`: absolute for scores in [0, 1] (0.02 = 2 points), relative for losses and perplexities
(0.02 = 2 % worse), absolute on the 1-10 scale for judge ratings (x 10).
"""

from __future__ import annotations

LOWER_IS_BETTER = ("loss", "perplexity")


def lower_is_better(metric: str) -> bool:
    return any(metric.endswith(k) or metric == k for k in LOWER_IS_BETTER)


def _regressed(metric: str, base: float, after: float, threshold: float) -> bool:
    if lower_is_better(metric):
        return after > base * (1 + threshold) if base > 0 else after > base + threshold
    scale = 10.0 if metric == "rating" else 1.0
    return after < base - threshold * scale


def compare(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], threshold: float = 0.02) -> list[dict]:
    """One row per (task, metric) present on both sides."""
    rows = []
    for task, scores in after.items():
        for metric, value in scores.items():
            base = before.get(task, {}).get(metric)
            if base is None or not isinstance(value, (int, float)) or value != value or base != base:
                continue
            delta = value - base
            better = delta < 0 if lower_is_better(metric) else delta > 0
            rows.append({"task": task, "metric": metric, "base": base, "model": value, "delta": delta,
                         "better": better and delta != 0, "regression": _regressed(metric, base, value, threshold)})
    return rows


def side_scores(results: dict, side: str) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of one side ("model" or "base") of results.json: tasks, judge
    ratings and harness together, the input `compare` takes."""
    out = {name: dict(r["scores"]) for name, r in results["results"][side].items()}
    judge = results.get("judge") or {}
    if side in judge:
        out["judge"] = {"rating": judge[side]["scores"]["rating"]}
    for name, scores in ((results.get("harness") or {}).get(side) or {}).get("scores", {}).items():
        out[name] = scores
    return out
