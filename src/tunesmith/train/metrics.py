"""What a run records as it goes: one JSON line per step in `metrics.jsonl`, and a progress bar.

The log is the run's memory. It is flushed line by line so a killed run keeps every step it
finished, and a resumed run first cuts it back to the checkpoint's step so the file never holds
the same step twice (or steps whose weights were thrown away).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from ..console import progress_bar
from ..io import atomic_write_bytes, plain_permissions  # noqa: F401  (re-exported: the report writers import them from here)


def _encode(value: Any) -> Any:
    """JSON has no NaN/inf; write them as strings so a diverged step is still one valid line."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors / numpy scalars
        return _encode(value.item())
    return value


class MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl, flushing each line.

    A killed run keeps what it logged. `truncate_after_step` (on resume) first drops the lines
    with step > N, rewriting the file atomically, so no step appears twice or orphaned.
    """

    def __init__(self, path: Path, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and (truncate_after_step is not None or _torn_tail(self.path)):
            # On resume, drop the steps logged after the checkpoint we restart from: they will be
            # run again, and the old ones came from weights that no longer exist. A torn last
            # line goes too, or the next append would turn it into a corrupt middle line.
            limit = math.inf if truncate_after_step is None else truncate_after_step
            kept = [r for r in read_metrics(self.path) if r["step"] <= limit]
            atomic_write_bytes(self.path, "".join(_line(r) for r in kept).encode())
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        if "step" not in record:
            raise ValueError(f"a metrics record needs a 'step' key, got {sorted(record)}")
        if self._file is None:
            raise ValueError(f"MetricsLog({self.path}) is closed")
        self._file.write(_line(record))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _torn_tail(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _line(record: dict) -> str:
    # json.dumps writes floats with repr(), which round-trips exactly: 1e-4 stays 1e-4.
    return json.dumps({k: _encode(v) for k, v in record.items()}) + "\n"


def read_metrics(path: Path) -> list[dict]:
    """Read metrics.jsonl; [] if absent.

    A torn last line (run killed mid-write) is ignored; a bad line anywhere else raises.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not an object with a 'step' key")
        except ValueError as e:
            if i == len(lines) - 1:
                break  # the write a killed run did not finish
            raise ValueError(f"{path}:{i + 1}: corrupt metrics line ({e}): {line[:80]!r}") from e
        records.append(record)
    return records


class Progress:
    """tqdm bar on stderr: steps done/total, rate, ETA, and a postfix with loss, lr, tok/s. When
    stderr is not a terminal (a log file, CI), a plain line every `console.LOG_EVERY_S` seconds.

    Disabled (no output) when enabled=False or not the main process (RANK != 0).
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.enabled = enabled and _is_main_process()
        self._bar = (
            progress_bar(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, smoothing=0.1)
            if self.enabled
            else None
        )

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(value: Any) -> str:
    """Postfix values short enough for one terminal line: loss=2.31, lr=1.0e-04, tok_s=2.1K."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return fmt_count(value)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.4g}"


# Numbers for people, shared by the progress bar and the report.
def fmt_count(n: float) -> str:
    """1234 -> '1.23K', 4194304 -> '4.19M', 1.1e9 -> '1.1B'."""
    rounded = float(f"{n:.3g}")  # so 999_999 reads '1M', not '1e+03K'
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(rounded) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)  # small counts stay exact: 512


def fmt_duration(seconds: float) -> str:
    """42.3 -> '42.3s', 192 -> '3m 12s', 3725 -> '1h 02m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def fmt_loss(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def fmt_bytes(n: float) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{int(n)} B"


def _is_main_process() -> bool:
    # Under torchrun/accelerate every rank would draw its own bar; only rank 0 shows one.
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
