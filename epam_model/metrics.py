"""Classification metrics for `epam-train eval` and the per-epoch validation: top-k accuracy, mean
class accuracy, confusion matrix and a per-class table. Pure numpy, so scores saved to an npz can be
re-scored or fused later.

Ties are broken the way `np.argmax` breaks them (the lowest class index wins), for every k: a sample
is correct at top-k when fewer than k classes rank above its label, where class j ranks above the
label when its score is higher, or equal with j < label. So top-1 always equals `argmax == label`
and agrees with the confusion matrix diagonal.

Mean class accuracy is the Toyota Smarthome metric (docs/protocols.md 4; "mean accuracy"): the mean
over classes of the share of that class's samples predicted right. Classes with no sample in the
labels are left out of the mean (their accuracy is undefined, not 0); `per_class_table` shows them
with 0 samples and an empty accuracy.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ClassRow",
    "topk_accuracy",
    "label_ranks",
    "mean_class_accuracy",
    "confusion_matrix",
    "per_class_table",
    "summarize",
]


@dataclass(frozen=True)
class ClassRow:
    """One row of the per-class table. accuracy is NaN when the class has no sample."""

    index: int
    name: str
    samples: int
    correct: int
    accuracy: float
    most_confused: str  # the most frequent wrong prediction for this class ("" when none)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, num_classes], got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be [N] = [{scores.shape[0]}], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1]}), found {labels.min()}..{labels.max()}"
        )
    return scores, labels.astype(np.int64)


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each sample's label among its scores (0 = top), ties to the lower class index as
    `np.argmax` does.

    scores: [N, C] logits or probabilities; labels: [N] class indices. Returns int64 [N].
    """
    scores, labels = _check(scores, labels)
    label_scores = scores[np.arange(len(labels)), labels][:, None]  # [N, 1]
    above = scores > label_scores
    tied_before = (scores == label_scores) & (np.arange(scores.shape[1])[None, :] < labels[:, None])
    return (above | tied_before).sum(axis=1).astype(np.int64)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of samples whose label is among the k best classes. With k >= num_classes every sample
    counts (1.0).

    An empty label array gives NaN rather than a made-up 0 or 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranks = label_ranks(scores, labels)
    return float((ranks < k).mean()) if ranks.size else float("nan")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]: rows are true classes, columns predicted ones."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must have the same shape"
        )
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), found {values.min()}..{values.max()}"
            )
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of their top-1 accuracy; absent classes are
    excluded.

    Returns NaN for empty labels.
    """
    scores, labels = _check(scores, labels)
    if not labels.size:
        return float("nan")
    matrix = confusion_matrix(labels, scores.argmax(axis=1), scores.shape[1])
    samples = matrix.sum(axis=1)
    present = samples > 0
    return float((np.diag(matrix)[present] / samples[present]).mean())


def per_class_table(
    scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> list[ClassRow]:
    """One `ClassRow` per class (all classes, absent ones with 0 samples and NaN accuracy)."""
    scores, labels = _check(scores, labels)
    num_classes = scores.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} score columns")
    matrix = confusion_matrix(labels, scores.argmax(axis=1), num_classes)
    rows = []
    for c in range(num_classes):
        samples, correct = int(matrix[c].sum()), int(matrix[c, c])
        wrong = matrix[c].copy()
        wrong[c] = 0
        confused = names[int(wrong.argmax())] if wrong.max() > 0 else ""
        rows.append(
            ClassRow(
                c,
                names[c],
                samples,
                correct,
                correct / samples if samples else float("nan"),
                confused,
            )
        )
    return rows


def summarize(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top1, top5 (k capped at the class count) and mean_class_acc of one set of scores."""
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_acc": mean_class_accuracy(scores, labels),
    }
