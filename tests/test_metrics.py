"""epam_model.metrics on hand-made score arrays: ties, absent classes, top-5 with fewer than 5
classes."""

import math

import numpy as np
import pytest

from epam_model.metrics import (
    confusion_matrix,
    label_ranks,
    mean_class_accuracy,
    per_class_table,
    summarize,
    topk_accuracy,
)

SCORES = np.array(
    [
        [0.9, 0.05, 0.05, 0.0],  # label 0: rank 0
        [0.1, 0.2, 0.6, 0.1],  # label 1: rank 1 (class 2 above)
        [0.5, 0.1, 0.2, 0.3],  # label 2: rank 2 (0 and 3 above)
        [0.1, 0.1, 0.1, 0.7],
    ]
)  # label 3: rank 0
LABELS = np.array([0, 1, 2, 3])


def test_topk_on_hand_made_scores() -> None:
    assert label_ranks(SCORES, LABELS).tolist() == [0, 1, 2, 0]
    assert topk_accuracy(SCORES, LABELS, 1) == 0.5
    assert topk_accuracy(SCORES, LABELS, 2) == 0.75
    assert topk_accuracy(SCORES, LABELS, 3) == 1.0


def test_ties_go_to_the_lower_class_index_like_argmax() -> None:
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    labels = np.array([0, 1, 2])
    assert label_ranks(scores, labels).tolist() == [0, 1, 2]
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 1) == float((scores.argmax(1) == labels).mean())
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)


def test_top5_with_fewer_than_5_classes_counts_every_sample() -> None:
    scores = np.array([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]])
    labels = np.array([0, 2])  # both ranked last
    assert topk_accuracy(scores, labels, 1) == 0.0
    assert topk_accuracy(scores, labels, 5) == 1.0
    assert summarize(scores, labels)["top5"] == 1.0


def test_mean_class_accuracy_excludes_absent_classes() -> None:
    # 4 score columns, but only classes 0 and 1 occur: class 0 has 3 samples (2 right), class 1 one
    # sample (right).
    scores = np.array([[5, 0, 0, 0], [5, 0, 0, 0], [0, 0, 0, 5], [0, 5, 0, 0]], dtype=float)
    labels = np.array([0, 0, 0, 1])
    assert mean_class_accuracy(scores, labels) == pytest.approx((2 / 3 + 1) / 2)
    assert (
        topk_accuracy(scores, labels, 1) == 0.75
    )  # top-1 weights samples, mean class accuracy weights classes


def test_confusion_matrix_and_per_class_table() -> None:
    matrix = confusion_matrix(LABELS, SCORES.argmax(1), 4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[1, 2] = expected[2, 0] = expected[3, 3] = 1
    np.testing.assert_array_equal(matrix, expected)
    scores = np.vstack([SCORES, [[0.0, 0.0, 0.0, 1.0]]])
    labels = np.array([0, 1, 0, 3, 3])  # class 2 absent
    rows = per_class_table(scores, labels, ["a", "b", "c", "d"])
    assert [(r.name, r.samples, r.correct) for r in rows] == [
        ("a", 2, 2),
        ("b", 1, 0),
        ("c", 0, 0),
        ("d", 2, 2),
    ]
    assert rows[0].most_confused == ""
    assert rows[1].most_confused == "c"
    assert math.isnan(rows[2].accuracy) and rows[3].accuracy == 1.0


def test_bad_shapes_and_labels_raise() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(SCORES, np.array([0, 1, 2, 4]))
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        topk_accuracy(np.zeros(4), LABELS)
    with pytest.raises(ValueError, match="k must be"):
        topk_accuracy(SCORES, LABELS, 0)
    assert math.isnan(topk_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64)))
    assert math.isnan(mean_class_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64)))


@pytest.mark.parametrize("num_classes", [4, 60, 120])
def test_confusion_png_grows_with_the_classes(tmp_path, num_classes: int) -> None:
    """Every class name needs its own row of text: the picture grows with the classes (about 22 px
    each)."""
    from PIL import Image

    from epam_model.confusion_plot import draw_confusion_png

    matrix = np.eye(num_classes, dtype=np.int64) * 5 + 1
    names = [f"class {index} with a long name" for index in range(num_classes)]
    path = draw_confusion_png(matrix, tmp_path / "confusion.png", names, title="fused")
    width, height = Image.open(path).size
    assert height >= 17 * num_classes and width > height
