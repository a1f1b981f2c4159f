"""What the objectives' report sections share: a figure written as PNG atomically, and a metrics cell."""

from __future__ import annotations

import io
from pathlib import Path

from ..train.metrics import atomic_write_bytes


def write_png(fig, out_png: Path) -> Path:
    """Render a matplotlib `Figure` (no pyplot state) to `out_png`, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png


def fmt_cell(v) -> str:
    """A number as a report.md table cell (4 decimals); anything else as an empty cell."""
    return f"{v:.4f}" if isinstance(v, (int, float)) else ""
