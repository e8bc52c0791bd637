"""matplotlib for the dashboard's charts: headless (Agg), one figure per request (no pyplot
state shared between threads), written as PNG for the page or PDF for a report."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = {"png": "image/png", "pdf": "application/pdf"}


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def to_bytes(figure: Figure, fmt: str) -> bytes:
    """The figure as ``fmt`` ("png" or "pdf") bytes, laid out so no label is cut."""
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format=fmt)
    return out.getvalue()
