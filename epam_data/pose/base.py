"""The pose-backend contract: RGB frames in, per-frame tracked persons with COCO-17 keypoints out.

Every backend (`blazepose`, the offline default; `mmlab`, mmdet + mmpose, and `blazepose+mmpose`,
both optional installs: `epam_data.pose.mmlab`) returns the same `FramePoses` per frame, so
`epam_data.persons.select_persons` and the extract pipeline never know which one ran. Keypoints are
always in original-frame pixels (x right, y down) and follow the COCO-17 order (`COCO17_NAMES`),
with left / right meaning the subject's own side, as in COCO. A backend keeps its tracking state
between `estimate` calls, so a long video can be fed in chunks (`epam_data.video.iter_frames`)
without ever holding all its frames; `reset` starts the next video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from epam_data.errors import PoseBackendError
from epam_data.skeleton import (
    COCO17_JOINT_NAMES as COCO17_NAMES,
)  # one list of COCO-17 names for the project

__all__ = ["COCO17_NAMES", "FramePoses", "PoseBackend", "PoseBackendError", "as_frames"]


@dataclass(frozen=True)
class FramePoses:
    """The persons found in one frame.

    Attributes:
        keypoints: float32 [P, 17, 2], COCO-17 (x, y) in original-frame pixels (P persons, possibly
            0).
        scores: float32 [P, 17], keypoint confidence in [0, 1] (BlazePose: landmark visibility).
        boxes: float32 [P, 5], person box (x1, y1, x2, y2) in pixels, clipped to the frame, and its
            score in [0, 1].
        track_ids: int64 [P], who each person is: the same id in every frame where the backend kept
            tracking that person, never reused within a video (ids restart at 0 after
            `PoseBackend.reset`).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    track_ids: np.ndarray

    @classmethod
    def empty(cls) -> FramePoses:
        """No person in this frame."""
        return cls(
            np.zeros((0, 17, 2), np.float32),
            np.zeros((0, 17), np.float32),
            np.zeros((0, 5), np.float32),
            np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.track_ids)


@runtime_checkable
class PoseBackend(Protocol):
    """What the extract pipeline needs from a pose backend.

    `name` and `model_ids` go into dataset.json, so a prepared dataset says which models made its
    skeletons.
    """

    name: str
    model_ids: dict[str, str]

    def estimate(self, frames: np.ndarray) -> list[FramePoses]:
        """frames: uint8 [T, H, W, 3] RGB, consecutive frames of one video -> one `FramePoses` per
        frame.

        Tracking continues from the previous call, so a video may be passed in chunks.
        """
        ...

    def reset(self) -> None:
        """Forget every tracked person: the next `estimate` call starts a new video."""
        ...


def as_frames(frames: np.ndarray) -> np.ndarray:
    """`estimate`'s input as uint8 [T, H, W, 3]: one [H, W, 3] frame becomes a batch of one;
    anything else is a ValueError that names what was given."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {frames.shape}"
        )
    return frames
