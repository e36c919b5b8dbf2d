"""Plots as PNG bytes (matplotlib, Agg backend, imported on first use): alignment and mel images for
training logs, the demo and alerts; ``pyplot`` and ``figure_png`` for any other figure (the report's
learning curves)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any, dpi: int = 90, tight: bool = True) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return buf.getvalue()


def plot_alignment(alignment: np.ndarray, title: str = "") -> bytes:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    im = ax.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("decoder step")
    ax.set_ylabel("text token")
    ax.set_title(title)
    return figure_png(fig)


def plot_mels(target: np.ndarray, predicted: np.ndarray) -> bytes:
    fig, axes = pyplot().subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, m, title in zip(axes, (target, predicted), ("target", "predicted (postnet)"), strict=True):
        ax.imshow(m, aspect="auto", origin="lower", interpolation="none")
        ax.set_title(title)
    return figure_png(fig)
