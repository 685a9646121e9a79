"""Which persons a sample keeps: per-frame tracked persons -> M fixed person slots over the whole sample.

A pose backend (`epam_data.pose`) reports, per frame, the persons it tracks with a track id that stays the same
while it holds that person. Here the tracks of a sample are ranked by (mean keypoint score x number of frames),
PYSKL's rule for choosing the M persons of an NTU sample (anchors.md 1.2), and the best M become slots
0..M-1: slot m is the same track in every frame, so a model never sees two people swap places mid-clip. A
frame where a kept person was not found holds zeros with score 0, which the heatmap renderer draws as
nothing. NTU mutual actions (A050-A060, A106-A120) keep two persons by default, every other sample one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from epam_data.datasets.base import Sample
from epam_data.datasets.ntu import is_mutual_action
from epam_data.pose.base import FramePoses

__all__ = ["PersonTracks", "default_max_persons", "select_persons"]

NUM_KEYPOINTS = 17


@dataclass(frozen=True)
class PersonTracks:
    """The persons kept for one sample, in fixed slots.

    Attributes:
        keypoints: float32 [M, T, 17, 2], COCO-17 (x, y) in original-frame pixels; 0 where the person is missing.
        scores: float32 [M, T, 17], clipped to [0, 1] so the shards' float16 holds them (to about 3 decimals);
            0 where the person is missing.
        boxes: float32 [M, T, 5], (x1, y1, x2, y2, score); all 0 where the person is missing.
        track_ids: int64 [M], the backend track each slot holds, best first; -1 for a slot no track filled.
        num_person_raw: how many distinct tracks the backend reported for the sample, before selection (PYSKL's
            `num_person_raw`).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    track_ids: np.ndarray
    num_person_raw: int

    @property
    def present(self) -> np.ndarray:
        """bool [M, T]: whether slot m holds a person in frame t."""
        return self.scores.any(-1) | self.boxes.any(-1)


def default_max_persons(sample: Sample, override: int | None = None) -> int:
    """M for a sample: `override` when given, else 2 for NTU mutual actions, else 1."""
    if override is not None:
        if override < 1:
            raise ValueError(f"max_persons must be at least 1, got {override}")
        return override
    if sample.dataset in ("ntu60", "ntu120") and sample.label is not None:
        return 2 if is_mutual_action(sample.label + 1) else 1  # label = action - 1
    return 1


def select_persons(frames: Sequence[FramePoses], max_persons: int) -> PersonTracks:
    """Keep the best `max_persons` tracks of a sample in fixed slots (see the module docstring).

    frames: one `FramePoses` per kept frame, in order (T = len(frames)). A track's rank is the sum over its
    frames of its mean keypoint score, i.e. mean score x length; ties go to the older (smaller) track id.
    Always returns M = max_persons slots; slots beyond the number of tracks stay empty (track id -1).
    """
    if max_persons < 1:
        raise ValueError(f"max_persons must be at least 1, got {max_persons}")
    num_frames = len(frames)
    totals: dict[int, float] = {}
    for poses in frames:
        if len(set(poses.track_ids.tolist())) != len(poses.track_ids):
            raise ValueError(f"a frame lists track ids {poses.track_ids.tolist()}: each person must appear once")
        for track_id, person_scores in zip(poses.track_ids.tolist(), poses.scores):
            totals[track_id] = totals.get(track_id, 0.0) + float(np.mean(person_scores))
    ranked = sorted(totals, key=lambda track_id: (-totals[track_id], track_id))[:max_persons]
    slot_of = {track_id: slot for slot, track_id in enumerate(ranked)}

    keypoints = np.zeros((max_persons, num_frames, NUM_KEYPOINTS, 2), np.float32)
    scores = np.zeros((max_persons, num_frames, NUM_KEYPOINTS), np.float32)
    boxes = np.zeros((max_persons, num_frames, 5), np.float32)
    for frame_index, poses in enumerate(frames):
        for row, track_id in enumerate(poses.track_ids.tolist()):
            slot = slot_of.get(track_id)
            if slot is not None:
                keypoints[slot, frame_index] = poses.keypoints[row]
                scores[slot, frame_index] = np.clip(poses.scores[row], 0.0, 1.0)
                boxes[slot, frame_index] = poses.boxes[row]
    track_ids = np.full(max_persons, -1, np.int64)
    track_ids[:len(ranked)] = ranked
    return PersonTracks(keypoints=keypoints, scores=scores, boxes=boxes, track_ids=track_ids,
                        num_person_raw=len(totals))
