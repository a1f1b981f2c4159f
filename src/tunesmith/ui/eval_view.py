"""The Eval page's backend: an eval output directory (what `tunesmith eval --out DIR` writes).

    results.json               every score and the settings (records stripped)
    samples/<side>-<task>.jsonl every example: prompt, answer, expected, score
    judge.jsonl                the judge's raw outputs, one line per judged answer

The before/after table is `evaluate.compare.compare` over the same per-side scores the eval used,
so a row is marked a regression here exactly when report.md marks it. Samples and judge verdicts
are read a page at a time: a page parses at most `limit` lines (and a sample file's lines are
counted once per opened view).
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from ..errors import UserError

PAGE_MAX = 100
JUDGE_LINES_MAX = 20000  # judge.jsonl is one line per judged answer: small, but bounded anyway
_SIDES = ("model", "base")


def _fix(directory: Path) -> str:
    return f"rerun `tunesmith eval ... --out {directory} --overwrite`"


def load_results(directory: str | Path) -> dict:
    """results.json of an eval directory, checked for the keys the page reads."""
    d = Path(directory).expanduser()
    path = d / "results.json"
    if not d.is_dir():
        raise UserError(f"{d}: no such directory; give the directory `tunesmith eval --out DIR` wrote")
    if not path.is_file():
        raise UserError(f"{path}: missing, so {d} is not an eval output (or the eval was interrupted); {_fix(d)}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e}); {_fix(d)}") from None
    sides = results.get("results") if isinstance(results, dict) else None
    if not isinstance(sides, dict) or not isinstance(sides.get("model"), dict):
        raise UserError(f"{path}: has no `results.model` scores, so it is not a `tunesmith eval` results.json; {_fix(d)}")
    for side, tasks in sides.items():
        for name, r in tasks.items():
            if not isinstance(r, dict) or not isinstance(r.get("scores"), dict):
                raise UserError(f"{path}: `results.{side}.{name}` has no `scores`; {_fix(d)}")
    return results


def sample_file(directory: Path, side: str, task: str) -> Path:
    """The path `evaluate.report.write_outputs` gives a side's samples of a task."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
    return directory / "samples" / f"{side}-{safe}.jsonl"


def read_lines(path: Path, offset: int, limit: int) -> list[dict]:
    """JSON lines [offset, offset + limit) of a file; a damaged line names file:line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(islice(f, offset, offset + limit), start=offset + 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not a JSON line ({e}); {_fix(path.parent.parent)}") from None
    return out


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _page(offset: int, limit: int) -> int:
    if offset < 0 or limit < 1:
        raise UserError(f"offset {offset}, limit {limit}: offset must be >= 0 and limit >= 1")
    return min(limit, PAGE_MAX)


class EvalView:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).expanduser()
        self.results = load_results(self.dir)
        self._counts: dict[Path, int] = {}

    def threshold(self) -> float:
        return float((self.results.get("config") or {}).get("regression_threshold", 0.02))

    def table(self, threshold: float | None = None) -> dict:
        """Before/after rows by the eval's own rule (`compare`), plus the scores only one side has."""
        from ..evaluate.compare import compare, side_scores

        r = self.results
        thr = self.threshold() if threshold is None else threshold
        if thr < 0:
            raise UserError(f"threshold {thr}: must be >= 0")
        model = side_scores(r, "model")
        base = side_scores(r, "base") if r.get("base") and "base" in r["results"] else {}
        rows = compare(model, base, thr) if base else []
        paired = {(x["task"], x["metric"]) for x in rows}
        only = [{"task": t, "metric": m, "model": v if side == "model" else None, "base": v if side == "base" else None}
                for side, scores in (("model", model), ("base", base)) for t, ms in scores.items()
                for m, v in ms.items() if (t, m) not in paired]
        return {"model": r.get("model"), "base": r.get("base"), "threshold": thr, "rows": rows, "unpaired": only,
                "regressions": sum(x["regression"] for x in rows), "better": sum(x["better"] for x in rows),
                "training": r.get("training"), "has_report": (self.dir / "report.md").is_file()}

    def tasks(self) -> list[dict]:
        """Tasks with samples on disk (perplexity sets keep none), the sides that have them."""
        out = []
        for name, r in self.results["results"]["model"].items():
            sides = [s for s in self.results["results"] if sample_file(self.dir, s, name).is_file()]
            if sides:
                out.append({"task": name, "metric": r.get("metric"), "n": r.get("n"), "source": r.get("source"), "sides": sides})
        return out

    def samples(self, task: str, offset: int = 0, limit: int = 10) -> dict:
        """Page of a task's examples, model and base answers side by side (same order in both files)."""
        limit = _page(offset, limit)
        if task not in self.results["results"]["model"]:
            raise UserError(f"task {task!r} is not in {self.dir / 'results.json'}; tasks: {', '.join(self.results['results']['model'])}")
        pages, total = {}, 0
        for side in self.results["results"]:
            path = sample_file(self.dir, side, task)
            if path.is_file():
                pages[side] = read_lines(path, offset, limit)
                if path not in self._counts:
                    self._counts[path] = count_lines(path)
                total = max(total, self._counts[path])
        if not pages:
            raise UserError(f"{sample_file(self.dir, 'model', task)}: missing; the samples of {task!r} were not written ({_fix(self.dir)})")
        n = max(len(p) for p in pages.values())
        rows = [{"index": offset + i, **{side: (p[i] if i < len(p) else None) for side, p in pages.items()}} for i in range(n)]
        return {"task": task, "offset": offset, "limit": limit, "total": total, "sides": list(pages), "rows": rows}

    def judge(self, offset: int = 0, limit: int = 10) -> dict:
        """The judge's summary and its verdicts, one row per question (single mode: model and base ratings)."""
        limit = _page(offset, limit)
        j = self.results.get("judge")
        if not j:
            return {"ran": False, "rows": [], "total": 0}
        path = self.dir / "judge.jsonl"
        records = read_lines(path, 0, JUDGE_LINES_MAX) if path.is_file() else []
        if j.get("mode") == "pairwise":
            per_q = [{"question": x.get("question"), "pairwise": x} for x in records]
        else:
            by_q: dict[int, dict] = {}
            seen: dict[str, int] = {}
            for x in records:  # each side's records are in question order
                side = x.get("side", "model")
                k = seen[side] = seen.get(side, -1) + 1
                by_q.setdefault(k, {"question": x.get("question")})[side] = x
            per_q = [by_q[k] for k in sorted(by_q)]
        summary = {k: v["scores"] for k, v in j.items() if isinstance(v, dict) and "scores" in v}
        return {"ran": True, "judge": j.get("judge"), "mode": j.get("mode"), "scores": summary, "total": len(per_q),
                "offset": offset, "limit": limit, "rows": per_q[offset : offset + limit],
                "missing_file": None if path.is_file() else str(path)}
