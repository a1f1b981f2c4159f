"""What every stage prints: `say` (one status line, rank 0 only) and `progress_bar` (a tqdm bar on a
terminal; in a log file, a plain line every few seconds).

A redirected or piped stderr (CI, nohup, `make demo > log 2>&1`) would otherwise receive every
carriage-return redraw of a bar: thousands of updates glued into one huge line. When stderr is not
a terminal, bars keep their counts but write one ordinary line per `LOG_EVERY_S` seconds, plus the
final state when they close.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from tqdm import tqdm

LOG_EVERY_S = float(os.environ.get("TUNESMITH_LOG_EVERY_S", "30"))
# No bar graphic in a log: the counts, the rate and the ETA are what a reader of the log wants.
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def say(msg: str) -> None:
    """One status line on stderr, from the main process only (RANK 0 under torchrun)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(msg, file=sys.stderr, flush=True)


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


class LineLog:
    """A file for tqdm that turns each redraw ("\\r" + status) into one plain line, and drops the
    blank redraws tqdm uses to clear a bar."""

    def __init__(self, stream: IO[str]):
        self.stream, self._last = stream, ""

    def write(self, text: str) -> int:
        for part in text.replace("\n", "\r").split("\r"):
            part = part.strip()
            if part and part != self._last:
                self.stream.write(part + "\n")
                self._last = part
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, *, file: IO[str] | None = None, interval_s: float | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr; when stderr (or `file`) is not a terminal, a line every
    `interval_s` (default LOG_EVERY_S) seconds instead of a redrawn bar."""
    stream = sys.stderr if file is None else file
    if is_terminal(stream) or kwargs.get("disable"):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.update(file=LineLog(stream), mininterval=LOG_EVERY_S if interval_s is None else interval_s,
                  leave=True,  # the final count is the line a log reader needs most
                  bar_format=kwargs.get("bar_format") or (_LOG_FORMAT if kwargs.get("total", _len(iterable)) else _LOG_FORMAT_NO_TOTAL))
    return tqdm(iterable, **kwargs)


def _len(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
