"""The held-out confusion matrix of a model as a PNG image.

Rows are true categories normalised to 1 (each cell is the fraction of that
category's held-out objects predicted as the column's category), so rare and
common categories read alike. The figure grows with the number of categories
and the labels shrink, so that 2 to about 130 categories stay readable; cells
carry their percentage when there are few of them. Categories kept in training
only (too rare to test) have an empty row, marked "(not tested)".

matplotlib is imported when a plot is drawn, with its Agg canvas and no pyplot,
so nothing global (backend, open figures) changes in the calling process.

>>> import io
>>> out = io.BytesIO()
>>> plot_confusion_matrix({"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}, out)
>>> out.getvalue()[:8] == PNG_SIGNATURE
True
"""

from __future__ import annotations

import os
from typing import IO, Any, Mapping

import numpy as np

__all__ = ["PNG_SIGNATURE", "plot_confusion_matrix", "row_normalised"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_LABEL = 40  # characters of a category name shown on an axis
_ANNOTATE_UP_TO = 20  # categories up to which each cell shows its percentage


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows without objects stay zero.

    >>> row_normalised(np.array([[1, 3], [0, 0]])).tolist()
    [[0.25, 0.75], [0.0, 0.0]]
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[:_MAX_LABEL - 1] + "…"


def plot_confusion_matrix(confusion: Mapping[str, Any], out: str | os.PathLike | IO[bytes], *,
                          title: str | None = None, dpi: int = 100) -> None:
    """Draw ``confusion`` (the ``confusion_matrix`` entry of a model's metrics) into ``out``.

    Parameters
    ----------
    confusion : mapping
        ``labels`` (category names) and ``matrix`` (counts, rows true,
        columns predicted, in ``labels`` order).
    out : path or binary file
        Where the PNG goes (written as PNG whatever the file name).
    title : str, optional
    dpi : int

    Raises
    ------
    ValueError
        The matrix is not square or does not match its labels.
    """
    labels = [str(v) for v in confusion.get("labels", [])]
    counts = np.asarray(confusion.get("matrix", []), dtype=np.float64)
    n = len(labels)
    if n == 0 or counts.shape != (n, n):
        raise ValueError(f"a confusion matrix needs a square matrix matching its {n} labels, "
                         f"got shape {counts.shape}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    share = row_normalised(counts)
    support = counts.sum(axis=1)
    shown = [_short(v) for v in labels]
    # The grid takes about 0.16 inch per category (3 to 24 inches); labels are 60 % of a
    # cell's height (4 to 10 pt) and the figure widens for the longest one.
    grid = float(np.clip(0.16 * n, 3.0, 24.0))
    font = float(np.clip(0.6 * grid * 72 / n, 4.0, 10.0))
    label_room = max(map(len, shown)) * font * 0.6 / 72 + 0.8
    fig = Figure(figsize=(grid + label_room + 1.6, grid + label_room + 0.9), dpi=dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest",
                      aspect="equal")
    colour_bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, shrink=0.6 if n > 20 else 1.0)
    colour_bar.set_label("fraction of the true category's held-out objects", fontsize=9)
    colour_bar.ax.tick_params(labelsize=8)
    ticks = np.arange(n)
    ax.set_xticks(ticks, shown, rotation=90, fontsize=font)
    ax.set_yticks(ticks, [v + (" (not tested)" if s == 0 else "")
                          for v, s in zip(shown, support)], fontsize=font)
    ax.set_xlabel("predicted category", fontsize=10)
    ax.set_ylabel("true category", fontsize=10)
    if n <= _ANNOTATE_UP_TO:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, f"{share[i, j]:.0%}", ha="center", va="center", fontsize=font,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(title or f"Held-out confusion matrix, rows normalised ({int(counts.sum())} "
                          f"objects, {n} categories)", fontsize=10)
    fig.savefig(out, format="png", dpi=dpi)
