"""The app: which pages exist (`PAGES`, also the nav bar), which API routers serve them (`ROUTERS`),
and the rules every request passes (ui/guard.py).

Adding a page: write `static/pages/NAME.html` (the body; it loads its own script from /static/),
add a `Page` to `PAGES`, and, for its data, a module with an `APIRouter` named `router` whose
routes live under /api/, listed in `ROUTERS`. Routes read the app's settings from
`request.app.state.ui` (a `UISettings`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .guard import Guard
from .layout import STATIC, render_page


@dataclass(frozen=True)
class Page:
    path: str  # URL; may hold FastAPI path parameters ("/runs/{name}"), which the page's script reads
    title: str  # the <title> and the nav label
    template: str  # file under static/pages/
    nav: bool = True  # listed in the nav bar (a run's own page is reached from the table, not the bar)


PAGES: list[Page] = [
    Page("/", "Runs", "runs.html"),
    Page("/runs/{name:path}", "Run", "run.html", nav=False),
    Page("/compare", "Compare", "compare.html"),
    Page("/new", "Start a run", "new.html"),
    Page("/data", "Data", "data.html"),
    Page("/eval", "Eval", "eval.html"),
    Page("/playground", "Playground", "playground.html"),
]

# "module:attribute" of each APIRouter, imported when the app is built.
ROUTERS: list[str] = [
    "tunesmith.ui.runs_api:router",
    "tunesmith.ui.compare_api:router",
    "tunesmith.ui.launch_api:router",
    "tunesmith.ui.data_api:router",
    "tunesmith.ui.eval_api:router",
    "tunesmith.ui.playground_api:router",
]


@dataclass(frozen=True)
class UISettings:
    runs_dir: Path
    token: str | None = None  # required (cookie, bearer header or ?token=) when set
    allow_train: bool = False  # starting/stopping runs; refused with a message otherwise
    loopback: bool = True  # bound to this machine only: requests must name it in their Host header
    serve_url: str = ""  # the playground's `tunesmith serve` (ui/playground.py); "" = none
    serve_key: str = field(default="", repr=False)  # its API key: sent to serve_url only, never to a page or a log


def create_app(runs_dir: str | Path, *, token: str | None = None, allow_train: bool = False, loopback: bool = True,
               serve_url: str = "", serve_key: str = ""):
    """The dashboard over the run directories under `runs_dir` (created if missing)."""
    runs = Path(runs_dir).expanduser().resolve()
    runs.mkdir(parents=True, exist_ok=True)
    settings = UISettings(runs, token, allow_train, loopback, serve_url, serve_key)
    app = FastAPI(title="tunesmith ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = settings
    for spec in ROUTERS:
        module, _, attr = spec.partition(":")
        app.include_router(getattr(importlib.import_module(module), attr))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for page in PAGES:
        app.add_api_route(page.path, _page_handler(page), methods=["GET"], response_class=HTMLResponse,
                          include_in_schema=False)
    app.add_middleware(Guard, settings=settings)
    return app


def _page_handler(page: Page):
    async def handler(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page(page, PAGES, request.app.state.ui))

    return handler
