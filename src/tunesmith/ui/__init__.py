"""`tunesmith ui`: a local web dashboard over run directories (runs, compare, start a run).

`create_app(runs_dir, ...)` (app.py) builds the FastAPI app without sockets; `run_ui` (launch.py) adds
the bind-address rules of `tunesmith serve` and uvicorn. Pages are plain HTML fragments in static/pages/
wrapped in one layout (layout.py); their scripts use static/common.js (fetch helpers, an SVG line chart).
"""

__all__ = ["Page", "create_app"]


def __getattr__(name: str):
    # fastapi is an extra: `import tunesmith.ui.launch` must work without it, to say how to install it
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
