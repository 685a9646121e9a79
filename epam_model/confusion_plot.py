"""The confusion-matrix picture of an evaluation (`confusion.png`), readable from 2 to 120+ classes.

Drawn with matplotlib's Agg backend (no display needed). The figure grows with the number of classes
so that every class name stays legible on both axes: a person looks for the rows of their weak
classes by name, and an index-only picture sends them to the per-class CSV for every lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from epam_data.atomic import write_atomic

__all__ = ["draw_confusion_png"]

ANNOTATE_MAX = 30  # write each cell's share (in %) into it up to this many classes
INCHES_PER_CLASS = 0.16
MIN_INCHES = 5.0


def _row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (0 for a class with no sample), so colours compare across
    classes."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)


def _labels(num: int, class_names: Sequence[str] | None) -> list[str]:
    """'index name' per class (names shortened to 28 characters), or the index alone without
    names."""
    if class_names is None or len(class_names) != num:
        return [str(index) for index in range(num)]
    return [
        f"{index} {name[:27] + '…' if len(name) > 28 else name}"
        for index, name in enumerate(class_names)
    ]


def draw_confusion_png(
    matrix: np.ndarray, path: str | Path, class_names: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true classes, columns: predictions) with class names,
    as a PNG.

    The written file is complete or absent (`epam_data.atomic.write_atomic`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    num = int(matrix.shape[0])
    shares = _row_shares(np.asarray(matrix, dtype=float))
    side = max(MIN_INCHES, 2.5 + INCHES_PER_CLASS * num)
    font = 9 if num <= 30 else 7 if num <= 80 else 5.5
    figure = Figure(figsize=(side + 1.5, side), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    labels = _labels(num, class_names)
    axes.set_xticks(range(num), labels, rotation=90, fontsize=font)
    axes.set_yticks(range(num), labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or "confusion (share of each true class)", fontsize=10)
    if num <= ANNOTATE_MAX:
        for (row, col), value in np.ndenumerate(shares):
            if value >= 0.005:
                axes.text(
                    col,
                    row,
                    f"{100 * value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=font - 1,
                    color="white" if value > 0.6 else "black",
                )
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the row")
    write_atomic(path, lambda stream: figure.savefig(stream, format="png"))
    return Path(path)
