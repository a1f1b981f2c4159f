"""/api/eval/*: the Eval page, over an eval output directory (`?dir=`, relative to --runs or
absolute): the before/after table, samples a page at a time, judge verdicts."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ..errors import UserError
from .eval_view import PAGE_MAX, EvalView
from .views_common import Cache, error, mtime, scan, user_path

router = APIRouter()
_views = Cache(size=8)


def _view(request: Request, directory: str) -> EvalView:
    d = user_path(directory, request.app.state.ui.runs_dir).resolve()
    return _views.get((str(d), mtime(d / "results.json")), lambda: EvalView(d))


@router.get("/api/eval/sources")
def sources(request: Request):
    runs = request.app.state.ui.runs_dir
    return {"runs_dir": str(runs), "evals": scan(runs, lambda p: (p / "results.json").is_file())}


@router.get("/api/eval/table")
def table(request: Request, dir: str = "", threshold: float | None = Query(None, ge=0)):
    try:
        v = _view(request, dir)
        return {**v.table(threshold), "tasks": v.tasks(), "dir": str(v.dir)}
    except UserError as e:
        return error(e)


@router.get("/api/eval/samples")
def samples(request: Request, dir: str = "", task: str = "", offset: int = Query(0, ge=0),
            limit: int = Query(10, ge=1, le=PAGE_MAX)):
    try:
        return _view(request, dir).samples(task, offset, limit)
    except UserError as e:
        return error(e)


@router.get("/api/eval/judge")
def judge(request: Request, dir: str = "", offset: int = Query(0, ge=0), limit: int = Query(10, ge=1, le=PAGE_MAX)):
    try:
        return _view(request, dir).judge(offset, limit)
    except UserError as e:
        return error(e)
