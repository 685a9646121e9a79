"""Frame-to-frame person tracking for detector-based backends: per-frame boxes + keypoints in,
stable track ids out.

A top-down backend (`epam_data.pose.mmlab`) detects people afresh in every frame, in the detector's
order, so "the j-th box" is a different person from one frame to the next (PYSKL's
`custom_2d_skeleton.py` stores exactly that, docs/prior-art.md 2.1). `IoUTracker` gives each
detection the id of the person it continues:

* a detection continues the track whose last box it overlaps most, when that IoU is at least
  `min_iou` (MMAction2's NTU extractor links boxes at IoU >= 0.6 with the tracklet's last box,
  docs/prior-art.md 3.1);
* failing that, the track whose last keypoints it is closest to: the mean distance of the joints
  confident in both, in units of the track's box size (sqrt of its area), at most
  `max_keypoint_shift`. This keeps a person whose box jumps (a limb stretched out, a partial
  occlusion) and tells apart two people whose boxes overlap;
* pairs are taken greedily, best first, each track and detection at most once; a detection left over
  starts a new track; a track unmatched for more than `max_missed` frames is forgotten (MMAction2:
  10).

Ids are never reused within a video (they restart at 0 after `reset`);
`epam_data.persons.select_persons` later stitches tracks that a long occlusion broke into one person
slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IoUTracker", "box_iou", "keypoint_shift"]


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # [4] x1, y1, x2, y2 in the frame where it was last seen
    keypoints: np.ndarray  # [17, 2] pixels, same frame
    scores: np.ndarray  # [17]
    missed: int = 0  # frames since it was last seen


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4+] with every box in b [K, 4+] (x1, y1, x2, y2), float64 [N,
    K]."""
    a, b = np.asarray(a, np.float64)[:, None, :4], np.asarray(b, np.float64)[None, :, :4]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def keypoint_shift(
    keypoints_a: np.ndarray,
    scores_a: np.ndarray,
    boxes_a: np.ndarray,
    keypoints_b: np.ndarray,
    scores_b: np.ndarray,
    *,
    min_score: float = 0.3,
) -> np.ndarray:
    """Mean distance between the joints of persons a [N, 17, 2] and persons b [K, 17, 2], over the
    joints whose score is at least `min_score` in both, divided by the size of a's box (sqrt of its
    area, at least 1 px).

    Returns float64 [N, K]; inf where the two persons have no confident joint in common.
    """
    both = (scores_a[:, None, :] >= min_score) & (scores_b[None, :, :] >= min_score)  # [N, K, 17]
    distance = np.hypot(*np.moveaxis(keypoints_a[:, None] - keypoints_b[None], -1, 0))  # [N, K, 17]
    count = both.sum(-1)
    mean = np.where(both, distance, 0.0).sum(-1) / np.maximum(count, 1)
    size = np.sqrt(
        np.clip((boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1]), 1.0, None)
    )
    return np.where(count > 0, mean / size[:, None], np.inf)


def _greedy_pairs(
    cost: np.ndarray, limit: float, taken_rows: set[int], taken_cols: set[int]
) -> list[tuple[int, int]]:
    """(row, col) pairs with cost <= limit, cheapest first, each row and column used once (ties:
    lower indices)."""
    rows, cols = np.nonzero(cost <= limit)
    order = np.lexsort((cols, rows, cost[rows, cols]))
    pairs = []
    for row, col in zip(rows[order].tolist(), cols[order].tolist()):
        if row not in taken_rows and col not in taken_cols:
            taken_rows.add(row)
            taken_cols.add(col)
            pairs.append((row, col))
    return pairs


class IoUTracker:
    """Stable ids for per-frame detections (module docstring). Feed the frames of one video in
    order.

    Args:
        min_iou: a detection continues a track when their boxes overlap at least this much.
        max_keypoint_shift: else when its keypoints lie within this many box sizes of the track's
            (mean distance).
        max_missed: a track not seen for more than this many frames is forgotten.
        min_keypoint_score: joints below this score are left out of the keypoint distance.
    """

    def __init__(
        self,
        *,
        min_iou: float = 0.5,
        max_keypoint_shift: float = 0.25,
        max_missed: int = 10,
        min_keypoint_score: float = 0.3,
    ) -> None:
        self.min_iou = min_iou
        self.max_keypoint_shift = max_keypoint_shift
        self.max_missed = max_missed
        self.min_keypoint_score = min_keypoint_score
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids restart at 0 (call between videos)."""
        self._tracks: list[_Track] = []
        self._next_id = 0

    def update(self, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The persons of the next frame -> their track ids, int64 [N].

        boxes: [N, 4+] x1, y1, x2, y2 (pixels); keypoints: [N, 17, 2] pixels; scores: [N, 17].
        """
        count = len(boxes)
        ids = np.full(count, -1, np.int64)
        taken_tracks: set[int] = set()
        taken_dets: set[int] = set()
        if self._tracks and count:
            last_boxes = np.stack([track.box for track in self._tracks])
            pairs = _greedy_pairs(
                -box_iou(last_boxes, boxes), -self.min_iou, taken_tracks, taken_dets
            )
            shift = keypoint_shift(
                np.stack([track.keypoints for track in self._tracks]),
                np.stack([track.scores for track in self._tracks]),
                last_boxes,
                keypoints,
                scores,
                min_score=self.min_keypoint_score,
            )
            pairs += _greedy_pairs(shift, self.max_keypoint_shift, taken_tracks, taken_dets)
            for track_index, det in pairs:
                ids[det] = self._tracks[track_index].track_id
        kept: list[_Track] = []
        for index, track in enumerate(self._tracks):
            if index in taken_tracks:
                det = int(np.flatnonzero(ids == track.track_id)[0])
                kept.append(
                    _Track(
                        track.track_id,
                        np.array(boxes[det, :4], np.float32),
                        np.array(keypoints[det], np.float32),
                        np.array(scores[det], np.float32),
                    )
                )
            elif track.missed < self.max_missed:
                track.missed += 1
                kept.append(track)
        for det in range(count):
            if ids[det] < 0:
                ids[det] = self._next_id
                kept.append(
                    _Track(
                        self._next_id,
                        np.array(boxes[det, :4], np.float32),
                        np.array(keypoints[det], np.float32),
                        np.array(scores[det], np.float32),
                    )
                )
                self._next_id += 1
        self._tracks = kept
        return ids
