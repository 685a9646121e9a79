"""The `movenet` pose backend: a COCO person detector finds people, MoveNet Thunder estimates each
one's 17 COCO joints in a square crop, and each person is followed by cropping the next frame
around their own joints.

Why a second offline backend: BlazePose's detector is anchored on faces and its landmark model was
trained mostly on one person facing the camera; on the real annotated sets it misses people seen
from behind, small, seated or overlapping others (BENCHMARKS.md, pose accuracy). CenterNet detects
whole bodies (80 COCO classes, 'person' used) and MoveNet Thunder, trained on COCO and Active
poses, reads an occluded or unusual body better (BENCHMARKS.md has the figures). It costs more:
Thunder runs a 256 x 256 crop per person per frame, about 4x BlazePose's landmark model on a CPU.

Tracking follows MoveNet's own video recipe (https://www.tensorflow.org/hub/tutorials/movenet,
`determine_crop_region`): the next crop is centred on the hips and spans 1.9x the torso and 1.2x
the body extent of the joints scored above 0.2; without a visible torso it falls back to the
joints' box. A person is kept while their mean joint score stays at `keep_score`; the detector
runs while slots are free, at most every `detect_every` frames, and right after someone is lost.
A new detection is cropped as top-down estimators crop (a square 1.25x the box's long side) and
becomes a person when their mean joint score reaches `min_score` and they are not someone already
held (their joints a mean `DUPLICATE_SHIFT` of their size from someone's). The detector's
threshold is low (0.2) because MoveNet's joint scores verify each candidate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epam_data.pose.base import FramePoses, PoseBackendError, as_frames
from epam_data.threads import set_cpu_threads

__all__ = ["MoveNetBackend", "crop_from_box", "crop_from_keypoints", "snap_crop"]

CROP_SCORE = 0.2  # MoveNet's MIN_CROP_KEYPOINT_SCORE: joints that shape the next crop
TORSO = (5, 6, 11, 12)  # shoulders, hips (COCO-17)
BOX_GROW = 1.25  # a detection's box -> a square crop this much larger than its long side
DUPLICATE_SHIFT = 0.1  # mean joint distance / body size under which two persons are one
CROP_GRID = (0.5, 0.5, 1.0)  # x0, y0, side (frame pixels): crops are snapped to it (`snap_crop`)


def crop_from_box(box: np.ndarray) -> np.ndarray:
    """A square crop (x0, y0, side) around a box (x1, y1, x2, y2), `BOX_GROW` x its long side."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, y2 - y1, 16.0) * BOX_GROW
    return np.array([(x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side], np.float64)


def crop_from_keypoints(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The next square crop (x0, y0, side) for a person with joints [17, 2] and scores [17]:
    MoveNet's recipe (module docstring); without a visible torso, the joints' box."""
    sure = scores > CROP_SCORE
    torso_seen = (sure[11] or sure[12]) and (sure[5] or sure[6])
    if not torso_seen:
        chosen = keypoints[sure] if sure.sum() >= 2 else keypoints
        return crop_from_box(np.concatenate([chosen.min(0), chosen.max(0)]))
    centre = (keypoints[11] + keypoints[12]) / 2
    torso = np.abs(keypoints[list(TORSO)] - centre).max()
    body = np.abs(keypoints[sure] - centre).max()
    half = max(torso * 1.9, body * 1.2, 8.0)
    return np.array([centre[0] - half, centre[1] - half, 2 * half], np.float64)


def snap_crop(crop: np.ndarray) -> np.ndarray:
    """Square crops (x0, y0, side) [..., 3] rounded to `CROP_GRID`, so that the next crop is the
    same on every CPU.

    Each crop comes from the previous frame's joints, and MoveNet's scores are sensitive to the crop
    when a person is cut off by the frame: torch's AVX-512, AVX2 and SSE kernels differ by about
    2e-5 in a heatmap, that reaches the joints and so the next crop, and within a few frames of the
    arm-wrestling close-up a person was kept on one CPU and dropped on another (BENCHMARKS.md).
    Snapped, such differences give the same crop except where a value sits on a grid line; half a
    pixel is far below the jitter MoveNet was trained with. It makes the tracking the same
    everywhere, not less chaotic: a crop moved on purpose by a fraction of the step still changes
    the close-up's figures. `epam_data.pose.blazepose_geometry.snap_roi` does the same for
    BlazePose.
    """
    step = np.asarray(CROP_GRID, np.float64)
    return np.round(np.asarray(crop, np.float64) / step) * step


@dataclass(eq=False)
class _Person:
    track_id: int
    keypoints: np.ndarray  # [17, 2] frame pixels
    scores: np.ndarray  # [17]


@dataclass
class MoveNetTimings:
    """Where the time went since the backend was made (seconds), for benchmarks."""

    frames: int = 0
    detector_calls: int = 0
    detector_s: float = 0.0
    pose_crops: int = 0
    pose_s: float = 0.0


@dataclass
class _Search:
    """The detector's schedule in the current video."""

    since: int | None = None  # frames since the detector last ran; None: not yet
    seeds: list[np.ndarray] = field(default_factory=list)  # crops from `start_tracks`


class MoveNetBackend:
    """CenterNet person detector + MoveNet Thunder with per-person crop tracking (module
    docstring).

    Args:
        max_persons: persons followed at once; the detector rests while that many are held.
        detect_every: with a slot free, the detector runs on every `detect_every`-th frame (and
            on the frame after someone is lost; with nobody held, on every frame).
        min_detection_score: CenterNet's 'person' score threshold.
        detector_side: CenterNet's input long side (the frame is resized to it): larger finds
            smaller people, at quadratic cost.
        min_score: mean joint score a new person needs.
        keep_score: mean joint score that keeps a followed person.
        settle_new: re-estimate a new person once more, in the crop of their own joints (as the
            next frame would), and keep the more confident of the two estimates.
        pose_model: "thunder" (256 x 256 crops) or "lightning" (192 x 192: about 3x faster on a
            CPU, less accurate; BENCHMARKS.md).
        device: where the networks run ("cpu", "cuda", ...); None: the CPU.
        threads: torch CPU threads (`epam_data.threads.set_cpu_threads`: default
            $OMP_NUM_THREADS, which extract's workers set to 1, else the usable cores less one).
        models: folder of the network files (else `$EPAM_MOVENET_MODELS`, else the venv's).
    """

    name = "movenet"

    def __init__(
        self,
        *,
        max_persons: int = 2,
        detect_every: int = 10,
        min_detection_score: float = 0.2,
        detector_side: int = 768,
        min_score: float = 0.3,
        keep_score: float = 0.2,
        settle_new: bool = False,
        pose_model: str = "thunder",
        device: str | None = None,
        threads: int | None = None,
        models: str | os.PathLike | None = None,
    ) -> None:
        if max_persons < 1 or detect_every < 1 or detector_side < 32:
            raise PoseBackendError(
                f"movenet needs max_persons >= 1, detect_every >= 1 and detector_side >= 32, got "
                f"{max_persons}, {detect_every}, {detector_side}"
            )
        self.max_persons, self.detect_every = max_persons, detect_every
        self.min_detection_score, self.min_score = min_detection_score, min_score
        self.keep_score, self.settle_new = keep_score, settle_new
        from epam_data.pose.movenet_networks import MoveNetNetworks  # torch, when used

        self.threads = set_cpu_threads(threads, device or "cpu")
        self._networks = MoveNetNetworks.load(models, detector_side, pose_model, device or "cpu")
        self.model_ids = self._networks.model_ids()
        self.timings = MoveNetTimings()
        self.reset()

    def reset(self) -> None:
        """Forget every followed person; track ids restart at 0 (call between videos)."""
        self._persons: list[_Person] = []
        self._search = _Search()
        self._next_id = 0

    def start_tracks(self, boxes: np.ndarray) -> None:
        """Look for a person in each box [N, 4+] (x1, y1, x2, y2, pixels) of the next frame: each
        kept while their mean joint score reaches `keep_score`, beyond `max_persons` if need be."""
        self._search.seeds.extend(crop_from_box(box) for box in np.asarray(boxes).reshape(-1, 4))

    def estimate(self, frames: np.ndarray) -> list[FramePoses]:
        """frames: uint8 [T, H, W, 3] RGB (or one [H, W, 3] frame) -> one `FramePoses` per frame;
        tracking carries on from the previous call."""
        return [self._track_frame(np.ascontiguousarray(frame)) for frame in as_frames(frames)]

    # -- one frame ---------------------------------------------------------------------------------

    def _track_frame(self, frame: np.ndarray) -> FramePoses:
        self.timings.frames += 1
        image = self._networks.image(frame)
        held = len(self._persons)
        crops = [crop_from_keypoints(p.keypoints, p.scores) for p in self._persons]
        seeds, self._search.seeds = self._search.seeds, []
        poses = self._estimate_crops(image, crops + seeds)
        kept: list[_Person] = []
        still_held = 0
        for index, (keypoints, scores) in enumerate(poses):
            if scores.mean() < self.keep_score or self._duplicate(keypoints, kept):
                continue
            person = self._persons[index] if index < held else self._new_person()
            person.keypoints, person.scores = keypoints, scores
            kept.append(person)
            still_held += index < held
        lost = still_held < held
        self._persons = kept
        if self._search_due(lost):
            self._add_detected(image)
        return self._frame_poses(frame.shape[:2])

    def _new_person(self) -> _Person:
        self._next_id += 1
        return _Person(self._next_id - 1, np.zeros((17, 2)), np.zeros(17))

    def _search_due(self, lost: bool) -> bool:
        """Whether the detector runs on this frame (the class docstring's schedule)."""
        search = self._search
        if len(self._persons) >= self.max_persons:
            search.since = None if search.since is None else search.since + 1
            return False
        due = not self._persons or lost or search.since is None
        due = due or search.since + 1 >= self.detect_every
        search.since = 0 if due else search.since + 1
        return due

    def _add_detected(self, image: Any) -> None:
        """Run the detector and take, best first, the persons it finds that are new."""
        start = time.perf_counter()
        boxes = self._networks.detector(image, self.min_detection_score)
        self.timings.detector_s += time.perf_counter() - start
        self.timings.detector_calls += 1
        boxes = boxes[: 2 * self.max_persons + len(self._persons)]  # the best few are enough
        if not len(boxes):
            return
        poses = self._estimate_crops(image, [crop_from_box(box) for box in boxes])
        if self.settle_new:
            settled = self._estimate_crops(image, [crop_from_keypoints(k, s) for k, s in poses])
            poses = [max(pair, key=lambda pose: pose[1].mean()) for pair in zip(poses, settled)]
        for keypoints, scores in poses:
            if len(self._persons) >= self.max_persons:
                break
            if scores.mean() >= self.min_score and not self._duplicate(keypoints, self._persons):
                person = self._new_person()
                person.keypoints, person.scores = keypoints, scores
                self._persons.append(person)

    def _estimate_crops(
        self, image: Any, crops: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(keypoints [17, 2] in frame pixels, scores [17]) for each square crop, one batch."""
        if not crops:
            return []
        start = time.perf_counter()
        square = snap_crop(np.stack(crops))  # [B, 3]: snap_crop works on any leading shape
        out = self._networks.poses(image, square)
        self.timings.pose_s += time.perf_counter() - start
        self.timings.pose_crops += len(crops)
        xy = square[:, None, :2] + out[..., [1, 0]] * square[:, None, 2:3]
        return [(xy[i], out[i, :, 2]) for i in range(len(crops))]

    @staticmethod
    def _duplicate(keypoints: np.ndarray, others: list[_Person]) -> bool:
        """Whether `keypoints` are someone in `others`: the mean distance of all 17 joints under
        `DUPLICATE_SHIFT` x the larger person's size (sqrt of the joints' box area). All joints,
        not only the confident ones as `epam_data.pose.tracking.keypoint_shift` counts: two arm
        wrestlers' confident joints are their clasped hands and arms, which coincide (with that
        measure two persons were held in 61 % of the close-up's first 150 frames, against 88 %)."""
        for other in others:
            size = max(_size(keypoints), _size(other.keypoints), 1.0)
            if np.linalg.norm(keypoints - other.keypoints, axis=1).mean() < DUPLICATE_SHIFT * size:
                return True
        return False

    def _frame_poses(self, frame_hw: tuple[int, int]) -> FramePoses:
        if not self._persons:
            return FramePoses.empty()
        keypoints = np.stack([p.keypoints for p in self._persons]).astype(np.float32)
        scores = np.stack([p.scores for p in self._persons]).astype(np.float32)
        limit = np.array([frame_hw[1], frame_hw[0]], np.float32)
        low, high = np.clip(keypoints.min(1), 0, limit), np.clip(keypoints.max(1), 0, limit)
        boxes = np.concatenate([low, high, scores.mean(1, keepdims=True)], 1)
        return FramePoses(
            keypoints=keypoints,
            scores=scores,
            boxes=boxes.astype(np.float32),
            track_ids=np.array([p.track_id for p in self._persons], np.int64),
        )


def _size(keypoints: np.ndarray) -> float:
    extent = keypoints.max(0) - keypoints.min(0)
    return float(np.sqrt(max(extent[0] * extent[1], 1.0)))
