"""`tunesmith ui`: the bind-address rules of `tunesmith serve` (serve/auth.py: loopback by default, a
token on any other address), then uvicorn."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import UserError
from ..serve.auth import check_bind, is_loopback


def check_options(runs: str | Path, host: str, port: int, token: str | None) -> Path:
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if token and not re.fullmatch(r"[A-Za-z0-9._~-]{8,}", token):
        raise UserError("--token: use at least 8 letters, digits or . _ ~ - (it travels in the printed URL and a cookie); "
                        "e.g. --token \"$(openssl rand -hex 16)\"")
    check_bind(host, token, flag="--token", how="open the printed URL, or send `Authorization: Bearer KEY`",
               what="the dashboard")
    runs = Path(runs).expanduser()
    if runs.exists() and not runs.is_dir():
        raise UserError(f"--runs {runs} is a file; give the directory that holds your run directories")
    return runs


def run_ui(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
           allow_train: bool = False, serve_url: str = "", serve_key: str = "") -> int:
    """Serve the dashboard until interrupted; returns the exit code."""
    runs = check_options(runs, host, port, token)
    if serve_url:
        from .playground import check_serve_url

        serve_url = check_serve_url(serve_url)  # a typo fails here, naming --serve-url, not on the first chat
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("the dashboard needs fastapi and uvicorn; pip install 'tunesmith[ui]'") from None
    from .app import create_app

    app = create_app(runs, token=token, allow_train=allow_train, loopback=is_loopback(host), serve_url=serve_url,
                     serve_key=serve_key)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    mode = "starting runs allowed (--allow-train)" if allow_train else "read-only (--allow-train to start runs)"
    print(f"tunesmith ui: {url}  runs in {runs.resolve()}; {mode}", flush=True)
    if serve_url:
        from .playground import safe_url

        print(f"tunesmith ui: the playground talks to tunesmith serve at {safe_url(serve_url)}"
              + (" (with --serve-key)" if serve_key else ""), flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
