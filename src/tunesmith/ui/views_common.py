"""What the Data, Eval and Playground routers share: user errors as `{"error": message}` JSON (the
shape common.js reads), a small cache of opened sources, and where to look for sources to offer."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from fastapi.responses import JSONResponse

from ..errors import UserError

SCAN_DEPTH = 3  # how deep under --runs the pickers look for prepared and eval directories
SCAN_MAX = 200


def error(e: UserError | str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=getattr(e, "status", status))


def user_path(raw: str, runs_dir: Path) -> Path:
    """A path from the page: relative to --runs (where the pickers list from) or absolute, and in
    either case inside --runs or the directory `tunesmith ui` was started in, so a page cannot have
    the dashboard read files elsewhere on the machine."""
    if not raw or not raw.strip():
        raise UserError("no path given; pick one from the list or type a path")
    p = Path(raw.strip()).expanduser()
    p = (p if p.is_absolute() else runs_dir / p).resolve()
    roots = [runs_dir.resolve(), Path.cwd().resolve()]
    if not any(p.is_relative_to(r) for r in roots):
        raise UserError(f"{p}: outside --runs ({roots[0]}) and the directory tunesmith ui was started in ({roots[1]}); "
                        "move it there or start `tunesmith ui` from a directory above it")
    return p


class Cache:
    """The last few opened sources (a data view holds a tokenizer and the rows), keyed by what
    identifies them, including file modification times so an edited source is reopened."""

    def __init__(self, size: int = 4):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: opening may take seconds (a tokenizer, a data set)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def mtime(*paths: Path) -> tuple:
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


def scan(runs_dir: Path, marker: Callable[[Path], bool]) -> list[str]:
    """Directories under runs_dir (at most SCAN_DEPTH deep, SCAN_MAX found) for which marker() holds,
    relative to runs_dir. Hidden directories and checkpoints are skipped: they never hold one."""
    found: list[str] = []
    root_depth = len(runs_dir.parts)
    for here, dirs, _ in os.walk(runs_dir):
        p = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("checkpoints", "adapter", "samples"))
        if len(p.parts) - root_depth >= SCAN_DEPTH:
            dirs[:] = []
        if p != runs_dir and marker(p):
            found.append(p.relative_to(runs_dir).as_posix())
            dirs[:] = []  # nothing to find inside one
            if len(found) >= SCAN_MAX:
                break
    return found
