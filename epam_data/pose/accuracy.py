"""How close a pose backend's skeletons are to hand-annotated people: OKS, person recall, per-joint
error, and COCO keypoint AP.

The measures are COCO's (https://cocodataset.org/#keypoints-eval): the object keypoint similarity
(OKS) of a predicted person with an annotated one is the mean over the annotated joints of exp(-d^2
/ (2 s^2 k^2)), d the distance, s^2 the person's area and k a per-joint constant (2 x the joint's
standard sigma); only joints with visibility > 0 count, so sets that annotate fewer joints
(`epam_data.pose.annotated`) are scored on those. Keypoint AP / AP50 / AR come from xtcocotools'
COCOeval, the evaluator mmpose uses; person recall at OKS 0.5 and per-joint errors come from a
greedy one-to-one matching, best OKS first, computed here (numpy) so tests need no evaluator.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from epam_data.pose.annotated import AnnotatedImage
from epam_data.pose.base import COCO17_NAMES, FramePoses, PoseBackendError

__all__ = [
    "COCO_SIGMAS",
    "Prediction",
    "coco_keypoint_ap",
    "match_people",
    "oks",
    "person_scores",
    "predict_images",
    "recalled_errors",
]

# COCO's per-joint standard deviations (cocoapi's COCOeval, kpt_oks_sigmas), COCO-17 order.
COCO_SIGMAS = (
    np.array([26, 25, 25, 35, 35, 79, 79, 72, 72, 62, 62, 107, 107, 87, 87, 89, 89], np.float64)
    / 1000
)


@dataclass(frozen=True)
class Prediction:
    """The persons a backend found in one image: keypoints [N, 17, 2] pixels, a score [N] each."""

    keypoints: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_poses(cls, poses: FramePoses) -> Prediction:
        """A backend's `FramePoses`, each person scored by `person_scores`."""
        return cls(poses.keypoints.astype(np.float64), person_scores(poses))


def person_scores(poses: FramePoses) -> np.ndarray:
    """A person's confidence for ranking in AP: the box score (BlazePose: pose presence) times the
    mean keypoint score, as mmpose rescores top-down results (box score x keypoint quality)."""
    if not len(poses):
        return np.zeros(0)
    return poses.boxes[:, 4].astype(np.float64) * poses.scores.mean(1)


def oks(predicted: np.ndarray, annotated: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS of every predicted person [N, 17, 2] with every annotated one [M, 17, 3] (areas [M]),
    float64 [N, M]; 0 for an annotated person without a labelled joint."""
    predicted = np.asarray(predicted, np.float64)
    annotated = np.asarray(annotated, np.float64)
    labelled = annotated[None, :, :, 2] > 0  # [1, M, 17]
    squared = ((predicted[:, None] - annotated[None, :, :, :2]) ** 2).sum(-1)  # [N, M, 17]
    variances = (2 * COCO_SIGMAS) ** 2
    scale = 2 * variances * (np.asarray(areas, np.float64)[None, :, None] + np.spacing(1))
    similarity = np.where(labelled, np.exp(-squared / scale), 0.0).sum(-1)
    return similarity / np.maximum(labelled.sum(-1), 1)


def match_people(similarity: np.ndarray) -> list[tuple[int, int, float]]:
    """(predicted, annotated, OKS) pairs, greedy from the highest OKS, each person at most once;
    pairs with OKS 0 are left out."""
    pairs = []
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    rows, cols = np.nonzero(similarity > 0)
    for index in np.argsort(-similarity[rows, cols], kind="stable"):
        row, col = int(rows[index]), int(cols[index])
        if row not in taken_rows and col not in taken_cols:
            taken_rows.add(row)
            taken_cols.add(col)
            pairs.append((row, col, float(similarity[row, col])))
    return pairs


def predict_images(
    backend: Any, images: Sequence[AnnotatedImage], *, from_box: bool = False
) -> tuple[list[Prediction], list[float]]:
    """Each image as a one-frame video through a pose backend: one `Prediction` per image and
    the seconds each took. `from_box` starts the backend from the annotated boxes
    (`BlazePoseBackend.start_tracks`): its landmark stage alone. Persons centred where nobody was
    annotated (an image's ignore mask) are left out, as PoseTrack's evaluation does."""
    predictions, seconds = [], []
    for image in images:
        frame = image.rgb()
        backend.reset()
        if from_box:
            backend.start_tracks(image.labelled_boxes())
        start = time.perf_counter()
        poses = backend.estimate(frame)[0]
        seconds.append(time.perf_counter() - start)
        prediction = Prediction.from_poses(poses)
        keep = ~image.ignored((poses.boxes[:, :2] + poses.boxes[:, 2:4]) / 2)
        predictions.append(Prediction(prediction.keypoints[keep], prediction.scores[keep]))
    return predictions, seconds


def recalled_errors(
    images: Sequence[AnnotatedImage], predictions: Sequence[Prediction], min_oks: float = 0.5
) -> np.ndarray:
    """One row per annotated person recalled at OKS >= `min_oks` (one-to-one, best first): each
    joint's distance / sqrt(area), float64 [recalled, 17], NaN where the joint is not labelled."""
    rows = []
    for image, prediction in zip(images, predictions):
        similarity = oks(prediction.keypoints, image.keypoints, image.areas)
        for row, col, value in match_people(similarity):
            if value >= min_oks:
                truth = image.keypoints[col]
                distance = np.hypot(*(prediction.keypoints[row] - truth[:, :2]).T)
                error = distance / np.sqrt(image.areas[col])
                rows.append(np.where(truth[:, 2] > 0, error, np.nan))
    return np.array(rows, np.float64).reshape(-1, 17)


def _ground_truth(images: Sequence[AnnotatedImage]) -> dict:
    """The images as a COCO keypoint ground-truth dict (ids are positions in `images`)."""
    annotations = []
    for image_id, image in enumerate(images):
        for keypoints, box, area in zip(image.keypoints, image.boxes, image.areas):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": keypoints.astype(float).ravel().tolist(),
                    "num_keypoints": int((keypoints[:, 2] > 0).sum()),
                    "bbox": box.astype(float).tolist(),
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    return {
        "images": [{"id": i} for i in range(len(images))],
        "annotations": annotations,
        "categories": [
            {"id": 1, "name": "person", "keypoints": list(COCO17_NAMES), "skeleton": []}
        ],
    }


def _results(predictions: Sequence[Prediction]) -> list[dict]:
    """Predictions as COCO keypoint results (keypoint confidences are not used by OKS: 1)."""
    results = []
    for image_id, prediction in enumerate(predictions):
        for keypoints, score in zip(prediction.keypoints, prediction.scores):
            triples = np.concatenate([keypoints, np.ones((17, 1))], axis=1)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": triples.ravel().tolist(),
                    "score": float(score),
                }
            )
    return results


def coco_keypoint_ap(
    images: Sequence[AnnotatedImage], predictions: Sequence[Prediction]
) -> dict[str, float]:
    """{"AP", "AP50", "AR"} of `predictions` (one per image) with xtcocotools' COCOeval (standard
    sigmas, every person's area as given); AP 0 when nothing was predicted."""
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except ImportError:
        raise PoseBackendError(
            "keypoint AP needs xtcocotools (installed with the light OpenMMLab stack: "
            "`bash scripts/install_mmlab.sh --light`)"
        ) from None
    results = _results(predictions)
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AR": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines and a table
        truth = COCO()
        truth.dataset = _ground_truth(images)
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "keypoints", COCO_SIGMAS)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(value), 0.0) for value in evaluator.stats]  # -1 means "no such people"
    return {"AP": stats[0], "AP50": stats[1], "AR": stats[5]}
