"""/api/compare?runs=A&runs=B...: 2 to 5 runs' metrics for overlaid curves, and their configs'
differences key by key (dotted keys, as overrides name them)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from . import jobs
from .metrics import curve_keys, json_safe, read_run_metrics
from .runs import describe, read_config, resolve_run

router = APIRouter()
MIN_RUNS, MAX_RUNS = 2, 5
MISSING = "(not set)"


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(configs: list[dict]) -> list[dict]:
    """[{key, values: one per config (MISSING where absent)}] for every key whose values differ, sorted.
    output_dir differs between any two runs by construction and says nothing, so it is left out."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat) - {"output_dir"})
    rows = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append({"key": key, "values": values})
    return rows


@router.get("/api/compare")
def api_compare(request: Request, runs: list[str] = Query(default=[], description="2 to 5 run names")):
    s = request.app.state.ui
    names = list(dict.fromkeys(runs))  # the same run twice is one run
    if not MIN_RUNS <= len(names) <= MAX_RUNS:
        return JSONResponse({"error": f"compare takes {MIN_RUNS} to {MAX_RUNS} different runs, got {len(names)}; "
                                      "tick them in the runs table"}, status_code=400)
    out, configs, keys = [], [], {}
    for name in names:
        run = resolve_run(s.runs_dir, name)
        if run is None:
            return JSONResponse({"error": f"no run {name!r} under {s.runs_dir}"}, status_code=404)
        cfg, problems = read_config(run)
        m = read_run_metrics(run / "metrics.jsonl")
        keys.update(dict.fromkeys(curve_keys(m.records)))
        configs.append(cfg)
        info = describe(run, s.runs_dir, jobs.read_job(s.runs_dir, name))
        out.append({"name": name, "info": info.to_json(), "records": json_safe(m.records)})
    same = len(set().union(*(flatten(c) for c in configs)) - {"output_dir"})
    diff = config_diff(configs)
    return {"runs": out, "keys": list(keys), "config_diff": diff, "same_keys": same - len(diff)}
