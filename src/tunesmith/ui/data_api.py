"""/api/data/*: the Data page. A source is `?path=` (a prepared directory or a run config, relative
to --runs or absolute) with an optional `&tokenizer=` (a model directory; by default the one the
manifest or the config names). Routes are sync: FastAPI runs them in its thread pool, so opening
a tokenizer or a data set never stalls the streams of other pages."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ..errors import UserError
from .data_view import PAGE_MAX, DataView, resolve_source
from .views_common import Cache, error, mtime, scan, user_path

router = APIRouter()
_views = Cache(size=4)


def _view(request: Request, path: str, tokenizer: str) -> DataView:
    p = user_path(path, request.app.state.ui.runs_dir).resolve()
    key = (str(p), tokenizer, mtime(p / "manifest.json", p))
    return _views.get(key, lambda: DataView(resolve_source(p, tokenizer.strip())))


@router.get("/api/data/sources")
def sources(request: Request):
    """Prepared directories and run configs under --runs, for the page's picker."""
    runs = request.app.state.ui.runs_dir
    prepared = scan(runs, lambda p: (p / "manifest.json").is_file() and (p / "train").is_dir())
    configs = [f"{d}/config.yaml" for d in scan(runs, lambda p: (p / "config.yaml").is_file())]
    return {"runs_dir": str(runs), "prepared": prepared, "configs": configs}


@router.get("/api/data/summary")
def summary(request: Request, path: str = "", tokenizer: str = ""):
    try:
        v = _view(request, path, tokenizer)
        return {**v.summary(), "drops": v.drops()}
    except UserError as e:
        return error(e)


@router.get("/api/data/rows")
def rows(request: Request, path: str = "", tokenizer: str = "", split: str = "train",
         offset: int = Query(0, ge=0), limit: int = Query(10, ge=1, le=PAGE_MAX)):
    try:
        return _view(request, path, tokenizer).page(offset, limit, split)
    except UserError as e:
        return error(e)


@router.get("/api/data/lengths")
def lengths(request: Request, path: str = "", tokenizer: str = "", split: str = "train"):
    try:
        return _view(request, path, tokenizer).lengths(split)
    except UserError as e:
        return error(e)
