"""Saving a report's figure: PNG (for the Markdown report) and PDF (vector, for a paper)."""

from __future__ import annotations

import io
from pathlib import Path

from .io import atomic_write_bytes


def save_figure(fig, path: Path) -> list[Path]:
    """Write ``fig`` as ``path`` with suffixes .png and .pdf (atomically), close it; the paths."""
    import matplotlib.pyplot as plt

    written = []
    for suffix in (".png", ".pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], dpi=110, bbox_inches="tight")
        atomic_write_bytes(path.with_suffix(suffix), buffer.getvalue())
        written.append(path.with_suffix(suffix))
    plt.close(fig)
    return written
