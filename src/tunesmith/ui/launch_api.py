"""Starting, stopping and resuming runs from the dashboard: /api/form (the fields), /api/validate and
/api/start (the form's values -> a config checked by RunConfig, written under RUNS/.tunesmith-ui/configs/,
then `tunesmith train` in the background), /api/stop/NAME, /api/resume/NAME.

Everything that changes something is refused unless the dashboard was started with --allow-train.
A run is started only into a name that does not exist yet; train itself refuses a non-empty run
directory without --resume, so nothing a user has is overwritten either way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import yaml
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from ..io import atomic_write_text
from . import jobs
from .form import EXTRA_FIELD, NAME_FIELD, check_name, form_fields, form_to_config, validate
from .runs import UI_DIR, describe, resolve_run

router = APIRouter()
_start_lock = threading.Lock()
READ_ONLY = ("this dashboard is read-only; restart it with `tunesmith ui --allow-train` to start, stop or "
             "resume runs from the page")


def _refuse(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


@router.get("/api/form")
def api_form(request: Request):
    s = request.app.state.ui
    return {"fields": form_fields(), "allow_train": s.allow_train, "runs_dir": str(s.runs_dir), "cwd": os.getcwd()}


def _files_exist(raw: dict, errors: dict) -> None:
    """Data files that are not there fail in seconds here rather than after a model load in the log."""
    for key in ("train", "eval"):
        missing = [p for p in (raw.get("data") or {}).get(key) or [] if isinstance(p, str) and not Path(p).expanduser().exists()]
        if missing:
            errors.setdefault(f"data.{key}", f"no such file: {', '.join(missing)} (relative paths start at {os.getcwd()}, "
                                             "where `tunesmith ui` runs)")
    if not (raw.get("data") or {}).get("train"):
        errors.setdefault("data.train", "add at least one training file (JSON, JSONL, CSV or Parquet), one per line")


def check_form(values: dict, runs_dir: Path) -> tuple[str, dict, dict]:
    """(name, config dict, errors by field) for submitted form values."""
    name = str(values.get(NAME_FIELD) or "").strip()
    errors: dict[str, str] = {}
    if problem := check_name(name):
        errors[NAME_FIELD] = problem
    elif (runs_dir / name).exists():
        errors[NAME_FIELD] = f"{runs_dir / name} already exists; choose a new name, or resume that run from its page"
    elif (job := jobs.read_job(runs_dir, name)) is not None and (jobs.job_status(job) or ("",))[0] == "running":
        errors[NAME_FIELD] = f"a run named {name} is starting (loading its model and data); choose a new name"
    raw, form_errors = form_to_config(values, str(runs_dir / (name or "unnamed")))
    errors.update(form_errors)
    if EXTRA_FIELD not in errors:
        _, schema_errors = validate(raw)
        for field, msg in schema_errors.items():
            errors.setdefault(field, msg)
    _files_exist(raw, errors)
    return name, raw, errors


@router.post("/api/validate")
def api_validate(request: Request, values: dict = Body(...)):
    s = request.app.state.ui
    _, raw, errors = check_form(values, s.runs_dir)
    return {"ok": not errors, "errors": errors, "yaml": yaml.safe_dump(raw, sort_keys=False)}


@router.post("/api/start")
def api_start(request: Request, values: dict = Body(...)):
    s = request.app.state.ui
    if not s.allow_train:
        return _refuse(403, READ_ONLY)
    with _start_lock:  # two clicks must not start two runs into one directory
        name, raw, errors = check_form(values, s.runs_dir)
        if errors:
            return _refuse(422, "the config is not valid; see the fields marked", errors=errors)
        config = s.runs_dir / UI_DIR / "configs" / f"{name}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        text = f"# tunesmith train {config}\n# written by `tunesmith ui` from the start-a-run form\n" + yaml.safe_dump(raw, sort_keys=False)
        atomic_write_text(config, text)
        job = jobs.start(s.runs_dir, name, config, cwd=Path.cwd())
    return {"name": name, "url": f"/runs/{name}", "pid": job["pid"], "config": str(config)}


@router.post("/api/stop/{name:path}")
def api_stop(name: str, request: Request):
    s = request.app.state.ui
    if not s.allow_train:
        return _refuse(403, READ_ONLY)
    try:
        job = jobs.stop(s.runs_dir, name)
    except LookupError as e:
        return _refuse(409, str(e))
    return {"name": name, "stopping": True, "pid": job["pid"]}


def resume_plan(run: Path, job: dict | None) -> tuple[Path, Path]:
    """(config, working directory) to resume `run` with: the launch's own config and directory when the
    dashboard started it; else the run's config.yaml, from the directory its relative output_dir starts at."""
    if job is not None and Path(job["config"]).is_file():
        return Path(job["config"]), Path(job.get("cwd") or run.parent)
    saved = run / "config.yaml"
    if not saved.is_file():
        raise LookupError(f"{run} holds no config.yaml to resume with")
    out = Path(str((yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("output_dir", "")))
    if out.is_absolute():
        if out.resolve() != run:
            raise LookupError(f"its config.yaml names output_dir {out}, not {run}; resume it from a shell")
        return saved, run.parent
    n = len(out.parts)
    if n == 0 or run.parts[-n:] != out.parts:
        raise LookupError(f"its config.yaml names output_dir {out}, which is not where it is; resume it from a shell")
    return saved, Path(*run.parts[:-n])


@router.post("/api/resume/{name:path}")
def api_resume(name: str, request: Request):
    s = request.app.state.ui
    if not s.allow_train:
        return _refuse(403, READ_ONLY)
    run = resolve_run(s.runs_dir, name)
    if run is None:
        return _refuse(404, f"no run {name!r} under {s.runs_dir}")
    with _start_lock:
        job = jobs.read_job(s.runs_dir, name)
        info = describe(run, s.runs_dir, job)
        if info.status in ("running", "finished"):
            why = "is running; stop it first" if info.status == "running" else "has finished; start a new run to train more"
            return _refuse(409, f"run {name} {why}")
        if not info.checkpoints:
            return _refuse(409, f"run {name} has no complete checkpoint to resume from (train.save_every)")
        try:
            config, cwd = resume_plan(run, job)
        except LookupError as e:
            return _refuse(409, f"cannot resume {name}: {e}")
        job = jobs.start(s.runs_dir, name, config, resume=True, cwd=cwd)
    return {"name": name, "resumed": True, "pid": job["pid"]}
