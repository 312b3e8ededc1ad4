"""Saving a report's figure: PNG (for the Markdown report), PDF and SVG (vector, for a paper)."""

from __future__ import annotations

import io
from pathlib import Path

from .io import atomic_write_bytes


def save_figure(fig, path: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``path`` with each of ``formats``' suffixes (atomically), close it; the paths."""
    import matplotlib.pyplot as plt

    written = []
    for suffix in (f".{f}" for f in formats):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], dpi=110, bbox_inches="tight",
                    metadata={"Date": None} if suffix == ".svg" else None)
        atomic_write_bytes(path.with_suffix(suffix), buffer.getvalue())
        written.append(path.with_suffix(suffix))
    plt.close(fig)
    return written
