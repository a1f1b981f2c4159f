"""/api/runs (the table), /api/run/NAME (one run: config, checkpoints, report), /api/run-metrics/NAME
(its metrics.jsonl, incrementally: ?after=STEP), /api/run-file/NAME?file=loss.png (the report's images)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from . import jobs
from .metrics import curve_keys, json_safe, read_run_metrics
from .report import render_report
from .runs import RunInfo, describe, find_runs, resolve_run

router = APIRouter()
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def not_found(message: str, status: int = 404) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def settings(request: Request):
    return request.app.state.ui


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run directory, plus launches whose directory does not exist yet (train claims it only
    once the config, data and model have loaded) or no longer exists."""
    launched = jobs.all_jobs(runs_dir)
    infos = [describe(run, runs_dir, launched.pop(run.relative_to(runs_dir).as_posix(), None)) for run in find_runs(runs_dir)]
    for name, job in launched.items():
        found = jobs.job_status(job)
        status, reason = found if found else ("failed", "the run's process ended before it wrote its run directory")
        if status == "running":
            reason = "starting: loading the config, data and model (the run directory appears after)"
        infos.append(RunInfo(name=name, status=status, status_reason=reason, job=job,
                             problems=[] if status == "running" else [f"no run directory {name}/"]))
    return sorted(infos, key=lambda i: i.name)


@router.get("/api/runs")
def api_runs(request: Request):
    s = settings(request)
    return {"runs_dir": str(s.runs_dir), "allow_train": s.allow_train,
            "runs": [info.to_json() for info in list_runs(s.runs_dir)]}


@router.get("/api/run/{name:path}")
def api_run(name: str, request: Request):
    s = settings(request)
    run = resolve_run(s.runs_dir, name)
    job = jobs.read_job(s.runs_dir, name)
    if run is None:
        if job is not None:  # launched, directory not there (yet)
            info = next((i for i in list_runs(s.runs_dir) if i.name == name), None)
            return {"info": info.to_json() if info else None, "config_text": None, "report_html": None,
                    "log": jobs.tail(job), "allow_train": s.allow_train}
        return not_found(f"no run {name!r} under {s.runs_dir}")
    info = describe(run, s.runs_dir, job)
    config = run / "config.yaml"
    return {"info": info.to_json(),
            "config_text": config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None,
            "report_html": render_report(run / "report.md", f"/api/run-file/{name}?file=") if info.has_report else None,
            "log": jobs.tail(job) if job else [], "allow_train": s.allow_train}


@router.get("/api/run-metrics/{name:path}")
def api_run_metrics(name: str, request: Request, after: int = Query(-1, description="only steps after this one")):
    s = settings(request)
    run = resolve_run(s.runs_dir, name)
    if run is None:
        if jobs.read_job(s.runs_dir, name) is not None:
            return {"records": [], "keys": [], "problems": [], "torn_tail": False}
        return not_found(f"no run {name!r} under {s.runs_dir}")
    m = read_run_metrics(run / "metrics.jsonl")
    # a resumed run cuts metrics.jsonl back to its checkpoint: a client that saw later steps starts over
    restart = after >= 0 and m.records and max(r["step"] for r in m.records) < after
    records = m.records if restart else [r for r in m.records if r["step"] > after]
    return {"records": json_safe(records), "keys": curve_keys(m.records), "problems": m.problems,
            "torn_tail": m.torn_tail, "restart": bool(restart)}


@router.get("/api/run-file/{name:path}")
def api_run_file(name: str, request: Request, file: str = Query(..., description="an image beside report.md")):
    """Only images, only inside the run: report.md may point anywhere, and the browser must not be
    handed a run's HTML or SVG (data, not markup the page would run)."""
    s = settings(request)
    run = resolve_run(s.runs_dir, name)
    if run is None:
        return not_found(f"no run {name!r} under {s.runs_dir}")
    path = (run / file).resolve()
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None or not path.is_relative_to(run) or not path.is_file():
        return not_found(f"{file!r} is not an image inside run {name}")
    return FileResponse(path, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})

